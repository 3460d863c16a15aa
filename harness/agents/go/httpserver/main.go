// The connformance http-server launcher for Go's net/http server (SPEC.md §4.5 paths).
//
//	httpserver --host 127.0.0.1 --port 8080 [--idle-timeout-ms N] [--keepalive false]
//	           [--read-header-timeout-ms N]
//
// A thin program over the standard library's http.Server: the connection handling under test is
// net/http's own. Paths: /sleep?ms=N (answer after N ms), /status/<code> (answer with that
// status), /bytes?n=N (N bytes with a Content-Length), / (200); anything else 404. Responses are
// text/plain. Knobs:
//
//	--idle-timeout-ms        http.Server.IdleTimeout (0 = ReadTimeout, which is 0: no limit)
//	--keepalive false        http.Server.SetKeepAlivesEnabled(false): Connection: close on every response
//	--read-header-timeout-ms http.Server.ReadHeaderTimeout
//
// Listens only on loopback (127.0.0.0/8) or a harness namespace address (198.18.0.0/15); prints
// "httpserver: listening on HOST:PORT" once accepting. SIGTERM/SIGINT: exits at once.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	host := flag.String("host", "127.0.0.1", "listen address (loopback or 198.18.0.0/15)")
	port := flag.Int("port", 0, "listen port")
	idleMs := flag.Int("idle-timeout-ms", 0, "http.Server.IdleTimeout in ms (0: Go's default, no limit)")
	keepalive := flag.Bool("keepalive", true, "false: SetKeepAlivesEnabled(false)")
	readHeaderMs := flag.Int("read-header-timeout-ms", 0, "http.Server.ReadHeaderTimeout in ms (0: none)")
	flag.Parse()
	ip := net.ParseIP(*host)
	if ip == nil || !(ip.IsLoopback() || (ip.To4() != nil && ip.To4()[0] == 198 && (ip.To4()[1] == 18 || ip.To4()[1] == 19))) {
		fmt.Fprintf(os.Stderr, "httpserver: --host %q: only 127.0.0.0/8 and 198.18.0.0/15 addresses are allowed\n", *host)
		os.Exit(2)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(handle),
		IdleTimeout:       time.Duration(*idleMs) * time.Millisecond,
		ReadHeaderTimeout: time.Duration(*readHeaderMs) * time.Millisecond,
	}
	srv.SetKeepAlivesEnabled(*keepalive)
	ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "httpserver: listen: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("httpserver: listening on %s (IdleTimeout %v, keep-alive %v)\n", ln.Addr(), srv.IdleTimeout, *keepalive)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintf(os.Stderr, "httpserver: serve: %v\n", err)
		os.Exit(1)
	}
}

func handle(w http.ResponseWriter, r *http.Request) {
	status, body := 200, "ok\n"
	switch {
	case r.URL.Path == "/":
	case r.URL.Path == "/sleep":
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			status, body = 400, "ms must be an integer >= 0\n"
		} else {
			time.Sleep(time.Duration(ms) * time.Millisecond)
			body = fmt.Sprintf("slept %d ms\n", ms)
		}
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 200 || code > 599 {
			status, body = 400, "status must be 200..599\n"
		} else {
			status, body = code, fmt.Sprintf("status %d\n", code)
		}
	case r.URL.Path == "/bytes":
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			status, body = 400, "n must be an integer >= 0\n"
		} else {
			body = strings.Repeat("x", n)
		}
	default:
		status, body = 404, "not found\n"
	}
	w.Header().Set("Content-Type", "text/plain")
	if status == 204 || status == 304 {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
