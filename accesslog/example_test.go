package accesslog_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"

	"github.com/sluiceproxy/sluice/accesslog"
)

// A Log wraps the whole chain: the handler's own 404 gets its line and its event like any
// other response. Here the Common Log Format goes to stdout, with the time taken out so that
// the output is the same on every run.
func ExampleLog() {
	clock := regexp.MustCompile(`\[.*\]`)
	l, err := accesslog.New(accesslog.Options{
		Format: accesslog.Common,
		Writer: writerFunc(func(p []byte) (int, error) { return os.Stdout.Write(clock.ReplaceAll(p, []byte("[time]"))) }),
		Hooks: accesslog.Hooks{RequestDone: func(r *http.Request, e accesslog.Event) {
			fmt.Println("event:", r.Method, r.URL.Path, e.Status, e.Bytes)
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	srv := httptest.NewServer(l.Handler(mux))
	defer srv.Close()

	for _, path := range []string{"/hello", "/missing"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	// Output:
	// event: GET /hello 200 5
	// 127.0.0.1 - - [time] "GET /hello HTTP/1.1" 200 5
	// event: GET /missing 404 19
	// 127.0.0.1 - - [time] "GET /missing HTTP/1.1" 404 19
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
