// Command httpagent is the connformance http-client agent for Go's net/http Transport
// (SPEC.md §4.4). It is a thin adapter: the pool behaviour under test is net/http's own.
//
//	httpagent --url URL [--url URL2 ...] --plan PLAN.json [knob flags]
//
// "--url A,B" is the same as "--url A --url B" (a manifest's one {url} can carry several).
//
// The plan is {"knobs": {...}, "phases": [...]}; phases run in order:
//
//	{"op": "burst", "n": 20, "path": "/sleep?ms=300", "method": "GET", "target": 0}
//	{"op": "sequential", "n": 10, "path": "/", "target": 1}
//	{"op": "sleep", "ms": 1500}
//	{"op": "cancel_burst", "n": 10, "cancel_after_ms": 50, "path": "/sleep?ms=300"}
//	{"op": "spread_burst", "n": 8, "targets": [0, 1], "path": "/sleep?ms=300"}
//
// (spread_burst is a burst over several hosts: request i goes to targets[i % len(targets)].)
//
// Optional per-request fields: "method" (GET), "body" (sent for any method when present),
// "timeout_ms" (a per-request deadline; absent = none, net/http's default), "target" (index into
// the --url list, 0).
//
// Output: one JSON line per request on stdout,
//
//	{"phase": 0, "i": 3, "start_ms": ..., "end_ms": ..., "status": 200, "error": null,
//	 "reused": false, "local_port": 41234}
//
// (start_ms/end_ms are Unix epoch milliseconds; reused and local_port come from
// httptrace.GotConnInfo; both are null when no connection was obtained; a canceled request's
// error starts with "canceled"), then {"done": true} and exit 0. A knob the Transport does not
// have, or a value it cannot express, prints {"unsupported": [names], "detail": {name: why}}
// before any request and exits 3. A bad command line or plan exits 2.
//
// Knobs (in the plan's "knobs", or as flags, which win):
//
//	max_conns_per_host  --max-conns-per-host   Transport.MaxConnsPerHost (0 = no limit)
//	max_idle_per_host   --max-idle-per-host    Transport.MaxIdleConnsPerHost; 0 = keep none
//	                                           (Go's -1: Go reads 0 as "default 2")
//	max_idle_total      --max-idle-total       Transport.MaxIdleConns; 0 = keep none (Go's -1)
//	idle_timeout_ms     --idle-timeout-ms      Transport.IdleConnTimeout (0 = never)
//	keepalive           --keepalive            false = Transport.DisableKeepAlives
//	block_when_full     --block-when-full      Go always waits at MaxConnsPerHost: true only
//	read_error_body     --read-error-body      false = close a >=400 response's body unread
//
// The Transport starts as a clone of http.DefaultTransport, so unset knobs keep the real
// defaults (MaxIdleConnsPerHost 2, MaxIdleConns 100, IdleConnTimeout 90 s).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	exitUsage       = 2
	exitUnsupported = 3
)

type phase struct {
	Op            string  `json:"op"`
	N             int     `json:"n"`
	Path          string  `json:"path"`
	Method        string  `json:"method"`
	Body          *string `json:"body"`
	Target        int     `json:"target"`
	Targets       []int   `json:"targets"`
	Ms            int     `json:"ms"`
	CancelAfterMs int     `json:"cancel_after_ms"`
	TimeoutMs     int     `json:"timeout_ms"`
}

type plan struct {
	Knobs  map[string]json.RawMessage `json:"knobs"`
	Phases []phase                    `json:"phases"`
}

type record struct {
	Phase     int     `json:"phase"`
	I         int     `json:"i"`
	StartMs   float64 `json:"start_ms"`
	EndMs     float64 `json:"end_ms"`
	Status    *int    `json:"status"`
	Error     *string `json:"error"`
	Reused    *bool   `json:"reused"`
	LocalPort *int    `json:"local_port"`
}

// knobs after parsing; nil = not set (keep the DefaultTransport value).
type knobs struct {
	maxConnsPerHost *int
	maxIdlePerHost  *int
	maxIdleTotal    *int
	idleTimeoutMs   *int
	keepalive       *bool
	blockWhenFull   *bool
	readErrorBody   bool
}

type urlList []string

func (u *urlList) String() string { return strings.Join(*u, ",") }
func (u *urlList) Set(v string) error {
	// "--url A,B" is "--url A --url B": a manifest template has one {url} element.
	for _, one := range strings.Split(v, ",") {
		if one = strings.TrimSpace(one); one != "" {
			*u = append(*u, one)
		}
	}
	return nil
}

var out struct {
	sync.Mutex
	enc *json.Encoder
}

func emit(v any) {
	out.Lock()
	defer out.Unlock()
	_ = out.enc.Encode(v) // one Write per line: lines never interleave
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "httpagent: "+format+"\n", args...)
	os.Exit(code)
}

func epochMs(t time.Time) float64 {
	return float64(t.UnixMicro()) / 1000.0
}

func main() {
	out.enc = json.NewEncoder(os.Stdout)

	var urls urlList
	fs := flag.NewFlagSet("httpagent", flag.ContinueOnError)
	fs.Var(&urls, "url", "server base URL; repeatable or comma-separated (a phase's \"target\" indexes the list)")
	planPath := fs.String("plan", "", "path of the plan JSON")
	// Knob flags are strings so "not given" is distinguishable and the plan's parser is reused.
	knobFlags := map[string]*string{}
	for _, name := range knobNames {
		knobFlags[name] = fs.String(strings.ReplaceAll(name, "_", "-"), "", "knob "+name)
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(exitUsage)
	}
	if len(urls) == 0 || *planPath == "" {
		fail(exitUsage, "usage: httpagent --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]")
	}
	raw, err := os.ReadFile(*planPath)
	if err != nil {
		fail(exitUsage, "cannot read plan: %v", err)
	}
	var p plan
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		fail(exitUsage, "plan %s is not valid: %v", *planPath, err)
	}
	if p.Knobs == nil {
		p.Knobs = map[string]json.RawMessage{}
	}
	fs.Visit(func(f *flag.Flag) {
		name := strings.ReplaceAll(f.Name, "-", "_")
		if v, ok := knobFlags[name]; ok {
			p.Knobs[name] = flagValueJSON(*v)
		}
	})

	k, unsupported, err := parseKnobs(p.Knobs)
	if err != nil {
		fail(exitUsage, "%v", err)
	}
	if len(unsupported) > 0 {
		names := make([]string, 0, len(unsupported))
		for name := range unsupported {
			names = append(names, name)
		}
		sort.Strings(names)
		emit(map[string]any{"unsupported": names, "detail": unsupported})
		os.Exit(exitUnsupported)
	}
	for idx, ph := range p.Phases {
		if err := checkPhase(ph, len(urls)); err != nil {
			fail(exitUsage, "phase %d: %v", idx, err)
		}
	}

	client := &http.Client{
		Transport: newTransport(k),
		// One record per exchange: a 3xx is an answer, not a hop to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for idx, ph := range p.Phases {
		runPhase(client, urls, idx, ph, k)
	}
	emit(map[string]bool{"done": true})
}

var knobNames = []string{
	"max_conns_per_host", "max_idle_per_host", "max_idle_total", "idle_timeout_ms",
	"keepalive", "block_when_full", "read_error_body",
}

// flagValueJSON turns a flag's text into the JSON the plan would hold: numbers and booleans
// stay as they are, anything else becomes a string (and fails type checking later).
func flagValueJSON(v string) json.RawMessage {
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return json.RawMessage(v)
	}
	if v == "true" || v == "false" {
		return json.RawMessage(v)
	}
	b, _ := json.Marshal(v)
	return b
}

// parseKnobs returns the knobs, and the ones net/http cannot honour (name -> why).
func parseKnobs(raw map[string]json.RawMessage) (knobs, map[string]string, error) {
	k := knobs{readErrorBody: true}
	unsupported := map[string]string{}
	intKnob := func(name string, min int) (*int, error) {
		var v int
		if err := json.Unmarshal(raw[name], &v); err != nil {
			return nil, fmt.Errorf("knob %s: expected an integer, got %s", name, raw[name])
		}
		if v < min {
			return nil, fmt.Errorf("knob %s: expected an integer >= %d, got %d", name, min, v)
		}
		return &v, nil
	}
	boolKnob := func(name string) (*bool, error) {
		var v bool
		if err := json.Unmarshal(raw[name], &v); err != nil {
			return nil, fmt.Errorf("knob %s: expected true or false, got %s", name, raw[name])
		}
		return &v, nil
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)
	var err error
	for _, name := range names {
		if string(raw[name]) == "null" {
			continue // a knob set to null is "not set"
		}
		switch name {
		case "max_conns_per_host":
			k.maxConnsPerHost, err = intKnob(name, 0)
		case "max_idle_per_host":
			k.maxIdlePerHost, err = intKnob(name, 0)
		case "max_idle_total":
			k.maxIdleTotal, err = intKnob(name, 0)
		case "idle_timeout_ms":
			k.idleTimeoutMs, err = intKnob(name, 0)
		case "keepalive":
			k.keepalive, err = boolKnob(name)
		case "block_when_full":
			if k.blockWhenFull, err = boolKnob(name); err == nil && !*k.blockWhenFull {
				unsupported[name] = "net/http always queues requests over MaxConnsPerHost; it cannot open extra connections instead"
			}
		case "read_error_body":
			var b *bool
			if b, err = boolKnob(name); err == nil {
				k.readErrorBody = *b
			}
		default:
			unsupported[name] = "not a knob net/http's Transport has (known: " + strings.Join(knobNames, ", ") + ")"
		}
		if err != nil {
			return k, nil, err
		}
	}
	return k, unsupported, nil
}

func newTransport(k knobs) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if k.maxConnsPerHost != nil {
		tr.MaxConnsPerHost = *k.maxConnsPerHost
	}
	if k.maxIdlePerHost != nil {
		tr.MaxIdleConnsPerHost = *k.maxIdlePerHost
		if *k.maxIdlePerHost == 0 {
			tr.MaxIdleConnsPerHost = -1 // Go: 0 means DefaultMaxIdleConnsPerHost, < 0 keeps none
		}
	}
	if k.maxIdleTotal != nil {
		tr.MaxIdleConns = *k.maxIdleTotal
		if *k.maxIdleTotal == 0 {
			tr.MaxIdleConns = -1 // Go: 0 means no limit; < 0 evicts every idle conn at once
		}
	}
	if k.idleTimeoutMs != nil {
		tr.IdleConnTimeout = time.Duration(*k.idleTimeoutMs) * time.Millisecond
	}
	if k.keepalive != nil && !*k.keepalive {
		tr.DisableKeepAlives = true
	}
	return tr
}

func checkPhase(ph phase, nurls int) error {
	switch ph.Op {
	case "sleep":
		if ph.Ms < 0 {
			return fmt.Errorf("sleep needs ms >= 0, got %d", ph.Ms)
		}
		return nil
	case "burst", "sequential", "cancel_burst":
	case "spread_burst":
		if len(ph.Targets) == 0 {
			return fmt.Errorf("spread_burst needs a non-empty targets list")
		}
		for _, t := range ph.Targets {
			if t < 0 || t >= nurls {
				return fmt.Errorf("target %d is not an index of the %d --url value(s)", t, nurls)
			}
		}
	default:
		return fmt.Errorf("unknown op %q (burst, sequential, sleep, cancel_burst, spread_burst)", ph.Op)
	}
	if ph.N < 0 {
		return fmt.Errorf("n must be >= 0, got %d", ph.N)
	}
	if ph.Target < 0 || ph.Target >= nurls {
		return fmt.Errorf("target %d is not an index of the %d --url value(s)", ph.Target, nurls)
	}
	if ph.CancelAfterMs < 0 || ph.TimeoutMs < 0 {
		return fmt.Errorf("cancel_after_ms and timeout_ms must be >= 0")
	}
	return nil
}

func runPhase(client *http.Client, urls []string, idx int, ph phase, k knobs) {
	switch ph.Op {
	case "sleep":
		time.Sleep(time.Duration(ph.Ms) * time.Millisecond)
	case "sequential":
		for i := 0; i < ph.N; i++ {
			emit(doRequest(client, urls[ph.Target], idx, i, ph, k, -1))
		}
	case "burst", "cancel_burst", "spread_burst":
		cancelAfter := time.Duration(-1) // none
		if ph.Op == "cancel_burst" {
			cancelAfter = time.Duration(ph.CancelAfterMs) * time.Millisecond
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < ph.N; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				<-start // release all at once: a burst is N requests in flight together
				emit(doRequest(client, urls[targetOf(ph, i)], idx, i, ph, k, cancelAfter))
			}(i)
		}
		close(start)
		wg.Wait()
	}
}

// targetOf is the --url index request i of a phase goes to.
func targetOf(ph phase, i int) int {
	if len(ph.Targets) > 0 {
		return ph.Targets[i%len(ph.Targets)]
	}
	return ph.Target
}

func doRequest(client *http.Client, base string, phaseIdx, i int, ph phase, k knobs, cancelAfter time.Duration) record {
	rec := record{Phase: phaseIdx, I: i}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if ph.TimeoutMs > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, time.Duration(ph.TimeoutMs)*time.Millisecond)
		defer stop()
	}
	var canceled atomic.Bool
	if cancelAfter >= 0 {
		// cancel_burst: the application gives up on the request (context cancellation).
		timer := time.AfterFunc(cancelAfter, func() { canceled.Store(true); cancel() })
		defer timer.Stop()
	}
	var gotMu sync.Mutex
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			gotMu.Lock()
			defer gotMu.Unlock()
			reused := info.Reused
			rec.Reused = &reused
			if addr, ok := info.Conn.LocalAddr().(*net.TCPAddr); ok {
				port := addr.Port
				rec.LocalPort = &port
			}
		},
	})
	method := ph.Method
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if ph.Body != nil {
		body = strings.NewReader(*ph.Body) // NewRequest sets GetBody: rewindable, as in real code
	}
	startT := time.Now()
	rec.StartMs = epochMs(startT)
	req, err := http.NewRequestWithContext(ctx, method, joinURL(base, ph.Path), body)
	if err == nil {
		var resp *http.Response
		resp, err = client.Do(req)
		if err == nil {
			status := resp.StatusCode
			rec.Status = &status
			if status < 400 || k.readErrorBody {
				_, err = io.Copy(io.Discard, resp.Body)
			}
			// Closing an unread body makes net/http close the connection (not reuse it).
			if cerr := resp.Body.Close(); err == nil {
				err = cerr
			}
		}
	}
	rec.EndMs = epochMs(time.Now())
	if err != nil {
		msg := err.Error()
		if errors.Is(err, context.Canceled) && canceled.Load() {
			msg = "canceled: after " + cancelAfter.String() + ": " + msg
		}
		rec.Error = &msg
	}
	gotMu.Lock()
	defer gotMu.Unlock()
	return rec
}

func joinURL(base, path string) string {
	if path == "" {
		return base
	}
	return strings.TrimRight(base, "/") + "/" + strings.TrimLeft(path, "/")
}
