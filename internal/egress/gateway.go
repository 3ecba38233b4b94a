package egress

import (
	"net/http"
	"strings"
)

// Gateway is what a run with a network of its own reaches at self, its one
// address out: the proxy for CONNECT and absolute-form requests, and local
// (the model broker) for the rest. A client that sends even its requests
// for self through the proxy still reaches local.
func Gateway(proxy, local http.Handler, self string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodConnect:
			proxy.ServeHTTP(w, r)
		case r.URL.IsAbs() && !strings.EqualFold(r.URL.Host, self):
			proxy.ServeHTTP(w, r)
		default:
			r.URL.Scheme, r.URL.Host = "", ""
			local.ServeHTTP(w, r)
		}
	})
}
