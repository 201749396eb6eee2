package ratelimit_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/sluiceproxy/sluice/ratelimit"
)

// Each client IP may send 2 requests at once and 1 a second after that; /login allows 1 a
// minute for everyone together. The second /login is refused by the login limit, and gives
// back the client token it took; the fourth request is over the client's burst.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	limiter, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{
			{Name: "client", Rate: 1, Burst: 2},
			{Name: "login", Rate: 1.0 / 60, Burst: 1, By: ratelimit.ByFunc(func(r *http.Request) (string, bool) {
				return "login", r.URL.Path == "/login"
			})},
		},
		Now: func() time.Time { return now }, // a fixed clock keeps the output stable
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	srv := httptest.NewServer(limiter.Handler(backend))
	defer srv.Close()

	for _, path := range []string{"/login", "/login", "/", "/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Printf("%s %d RateLimit: %s", path, resp.StatusCode, resp.Header.Get("RateLimit"))
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			fmt.Printf(" Retry-After: %s", ra)
		}
		fmt.Println()
	}
	fmt.Println("policy:", limiter.Policy())
	// Output:
	// /login 200 RateLimit: "client";r=1;t=1, "login";r=0;t=60
	// /login 429 RateLimit: "client";r=1;t=1, "login";r=0;t=60 Retry-After: 60
	// / 200 RateLimit: "client";r=0;t=2
	// / 429 RateLimit: "client";r=0;t=2 Retry-After: 1
	// policy: "client";q=2;w=2, "login";q=1;w=60
}

// Counting decisions by Limit and result with a hook, as a metrics adapter does, and the
// keys each Limit holds with Stats.
func ExampleHooks() {
	counts := map[string]int{} // the handler is called from one goroutine here
	limiter, err := ratelimit.New(ratelimit.Options{
		Limits: []ratelimit.Limit{{Name: "client", Rate: 1, Burst: 1}},
		Hooks: ratelimit.Hooks{Decision: func(e ratelimit.DecisionEvent) {
			k := e.Result.String()
			if e.Limit >= 0 { // an admitted request that waited for nothing names no Limit
				k += " by " + e.Name
			}
			counts[k]++
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	h := limiter.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for range 3 {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	fmt.Println(counts)
	fmt.Println(limiter.Stats().Limits)
	// Output:
	// map[allowed:1 limited by client:2]
	// [{client 1}]
}
