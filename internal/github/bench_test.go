package github

import (
	"context"
	"testing"

	"github.com/taskworker/taskworker/internal/testkit/standin/githubtest"
)

// BenchmarkCheckLogTail reads the last 12 KiB of a 20 MiB job log, as a CI
// round does for each failing check: its time and memory per read.
func BenchmarkCheckLogTail(b *testing.B) {
	srv := githubtest.NewServer("tok")
	defer srv.Close()
	srv.CI = func(string, string, string) ([]githubtest.Check, bool) {
		return []githubtest.Check{{Name: "test", Conclusion: "failure", LogBytes: 20 << 20, Log: "FAIL\n"}}, true
	}
	c := New(srv.URL, "tok")
	ci, err := c.CI(context.Background(), "acme", "app", "abc")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(20 << 20)
	for b.Loop() {
		if _, err := c.CheckLog(context.Background(), "acme", "app", ci.Checks[0], 12<<10); err != nil {
			b.Fatal(err)
		}
	}
}
