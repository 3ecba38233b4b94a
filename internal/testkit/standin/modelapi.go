package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
)

// ModelServer is a running stand-in of a model API.
type ModelServer struct {
	Server
	// APIKey is the only key it takes.
	APIKey string

	answers atomic.Int64
}

// NextAnswer numbers the next answer, for ids of its own.
func (s *ModelServer) NextAnswer() int64 { return s.answers.Add(1) }

// Refusal is an error answer of an API. A zero Status is no refusal.
type Refusal struct {
	Status  int
	Type    string
	Message string
}

// invalidRequest is the error type of a request the API can't take; the
// model APIs spell it alike.
const invalidRequest = "invalid_request_error"

// ModelAPI is what one model API's stand-in supplies to the request path
// they share: the route, the key, the headers, the JSON body, the
// conversation a script reads, and the script's reply, answered as an API
// error or as the API answers. Request is the JSON body, Conversation what a
// script reads of it, Reply what the script answers.
type ModelAPI[Request, Conversation, Reply any] struct {
	// Endpoint is the one path served, to POST only.
	Endpoint string
	// Probe, if set, is a path answered 200 whatever the request: a
	// client's check that the API is there.
	Probe string
	// NotFoundType is the error type of a request for anything else.
	NotFoundType string
	// Authenticated says whether the request carries key as the API takes it.
	Authenticated func(r *http.Request, key string) bool
	// Unauthenticated refuses a request that does not.
	Unauthenticated Refusal
	// CheckHeaders says what a request lacks of the headers the API
	// requires; nil requires none.
	CheckHeaders func(r *http.Request) error
	// BadJSON begins the message for a body that is not JSON.
	BadJSON string
	// Conversation checks the request as the API does and reads what a script needs.
	Conversation func(Request) (Conversation, error)
	// Failure is the API error a reply asks for, if any.
	Failure func(Reply) Refusal
	// ErrorBody is the API's JSON body of an error.
	ErrorBody func(typ, message string) any
	// Answer writes the reply as the API answers.
	Answer func(w http.ResponseWriter, req Request, reply Reply)
}

// Serve starts s serving the endpoint with script, taking only apiKey.
func (api ModelAPI[Request, Conversation, Reply]) Serve(s *ModelServer, apiKey string, script func(Conversation) Reply) {
	s.APIKey = apiKey
	s.Serve(api.handler(&s.Record, apiKey, script))
}

func (api ModelAPI[Request, Conversation, Reply]) handler(record *Record, key string, script func(Conversation) Reply) http.Handler {
	refuse := func(w http.ResponseWriter, status int, typ, message string) {
		record.Refuse(w, status, typ, message, api.ErrorBody(typ, message))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if api.Probe != "" && r.URL.Path == api.Probe {
			w.WriteHeader(http.StatusOK)
			return
		}
		if r.URL.Path != api.Endpoint || r.Method != http.MethodPost {
			refuse(w, http.StatusNotFound, api.NotFoundType, fmt.Sprintf("%s %s is not served by this stand-in", r.Method, r.URL.Path))
			return
		}
		if !api.Authenticated(r, key) {
			refuse(w, api.Unauthenticated.Status, api.Unauthenticated.Type, api.Unauthenticated.Message)
			return
		}
		if api.CheckHeaders != nil {
			if err := api.CheckHeaders(r); err != nil {
				refuse(w, http.StatusBadRequest, invalidRequest, err.Error())
				return
			}
		}
		var req Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			refuse(w, http.StatusBadRequest, invalidRequest, api.BadJSON+err.Error())
			return
		}
		conv, err := api.Conversation(req)
		if err != nil {
			refuse(w, http.StatusBadRequest, invalidRequest, err.Error())
			return
		}
		record.Served()
		reply := script(conv)
		if failure := api.Failure(reply); failure.Status != 0 {
			WriteJSON(w, failure.Status, api.ErrorBody(failure.Type, failure.Message))
			return
		}
		api.Answer(w, req, reply)
	})
}
