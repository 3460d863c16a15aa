// Command nacosagent is the nacos-client agent over the real Go SDK,
// github.com/nacos-group/nacos-sdk-go/v2 (SPEC §4.3).
//
//	nacosagent --servers 127.0.0.1:P[,...] --control-port C [--request-timeout-ms N]
//	    [--server-check-timeout-ms N] [--app-name X] [--work-dir DIR]
//
// One source for both pinned SDK versions: go.mod pins the newest v2 release, go-v2.2.7.mod the
// older line; harness/agents/build_nacos.py builds each with `go build -modfile=...`.
//
// The SDK does the work: clients.NewNamingClient with one constant.NewServerConfig(ip, port) per
// list entry (GrpcPort = port+1000), NotLoadCacheAtStart, cache dir in the work dir, no login, no
// endpoint. The agent observes it and forwards one naming call on demand.
//
// What the SDK makes public, and so what this agent reports:
//   - The naming client's RpcClient (with its RegisterConnectionListener, IsRunning and
//     currentConnection) is reachable only through unexported fields, so the agent does not use
//     it. NamingClient.ServerHealthy() is public, but when gRPC is not RUNNING it falls back to an
//     HTTP GET /nacos/v1/ns/operator/metrics on every listed server's main port (up to 3 tries,
//     ClientConfig.TimeoutMs each): polling it would add HTTP traffic the application never
//     sends, and hang /state on a paused server. The agent does not call it either.
//   - The one public hook is the SDK's logger (logger.SetLogger, set before the client is
//     created, so the SDK's InitLogger keeps it). The SDK narrates every connection change
//     there, and the agent takes its events, status, server and connection id from exactly those
//     statements (rpc_client.go / grpc_client.go, identical in v2.2.7 and v2.3.5):
//     "success to connect to server %+v on start up, connectionId=%s" and
//     "success to connect a server %+v, connectionId=%s" -> connected, RUNNING, server =
//     serverIp:serverPort of the logged ServerInfo, connection_id = the logged id;
//     "abandon prev connection, ..., connectionId is %s" -> disconnected (the logged server is
//     the NEW one, an SDK quirk, so the event carries the last connected server);
//     "server check success, currentServer is %+v" (reconnect with onRequestFail=true whose
//     health check passed: the SDK sets RUNNING and re-notifies CONNECTED to its listeners on the
//     same connection) -> connected with detail.renotified = true;
//     "try to re connect to a new server" and "recommend server is not in server list" ->
//     switching, UNHEALTHY;
//     "server healthy check fail", "request stream onCompleted, switch server", "request stream
//     error, switch server", "Connection is unregistered, switch server" -> UNHEALTHY (and an
//     error event); any other WARN/ERROR record -> error event. Every record is also printed to
//     stderr (the peer log).
//   - reset_received: never. The SDK's ConnectResetRequestHandler logs nothing and its handler
//     map is unexported; a reset shows only through what it causes (switching/connected above).
//   - status: STARTING until the first connected statement, RUNNING/UNHEALTHY per the
//     statements above, SHUTDOWN after CloseClient.
//   - meta: client_ip = util.LocalIP() (what the SDK puts in metadata.clientIp; the SDK has no
//     setting for it), client_version = constant.CLIENT_VERSION. labels null: the RpcClient's
//     labels are unexported (the naming client sends source/module, plus app_* labels from
//     ClientConfig.AppConnLabels). tenant null: unexported, and the naming client never sets
//     RpcClient.Tenant, so its setup carries "" whatever the namespace. app_name null: the SDK
//     sends no AppName label (ClientConfig.AppName only goes into request headers).
//   - POST /request: {"type": "list_services"} (default) is NamingClient.GetAllServicesInfo ->
//     one ServiceListRequest through the SDK's RpcClient.Request (3 tries, 301 -> switch). The
//     SDK's instance queries (SelectAllInstances, GetService) subscribe once and then answer
//     from the cache, so they would not send a request every time. error_code is always null:
//     the SDK turns an ErrorResponse into errors.New(message), without the code.
//
// Knobs: --request-timeout-ms -> ClientConfig.TimeoutMs (SDK default 10000: the naming requests'
// timeout); --server-check-timeout-ms -> env nacos.remote.client.grpc.timeout (the one context
// all ServerCheck tries share; default 3000); --app-name -> ClientConfig.AppName. The health
// check (every 5 s when idle 5 s, one 3000 ms try) and the backoff are constants in the SDK.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/clients"
	"github.com/nacos-group/nacos-sdk-go/v2/clients/naming_client"
	"github.com/nacos-group/nacos-sdk-go/v2/common/constant"
	"github.com/nacos-group/nacos-sdk-go/v2/common/logger"
	"github.com/nacos-group/nacos-sdk-go/v2/util"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
)

const (
	workDirPrefix         = "connformance-nacos-go-"
	serverCheckTimeoutEnv = "nacos.remote.client.grpc.timeout"
)

// ---- state ------------------------------------------------------------------------------------

type event struct {
	TMs    int64   `json:"t_ms"`
	Kind   string  `json:"kind"`
	Server *string `json:"server"`
	Detail any     `json:"detail"`
}

type agentState struct {
	mu           sync.Mutex
	status       string
	server       *string
	connectionID *string
	events       []event
	meta         map[string]any
}


// The network namespaces the harness creates take their addresses from the benchmarking range
// (RFC 2544): a packet-level case gives the agent a server's own address there.
var _, harnessNamespaces, _ = net.ParseCIDR("198.18.0.0/15")

func strp(s string) *string { return &s }

func (s *agentState) record(kind string, server *string, detail any) {
	s.recordAt(time.Now(), kind, server, detail)
}

func (s *agentState) recordAt(at time.Time, kind string, server *string, detail any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, event{TMs: at.UnixMilli(), Kind: kind, Server: server, Detail: detail})
}

func (s *agentState) snapshot(since int) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if since > len(s.events) {
		since = len(s.events)
	}
	events := append([]event{}, s.events[since:]...)
	return map[string]any{
		"status": s.status, "server": s.server, "connection_id": s.connectionID,
		"events": events, "events_total": len(s.events), "meta": s.meta,
	}
}

// ---- the SDK's logger: the hook ---------------------------------------------------------------

var (
	// fmt's %+v of rpc.ServerInfo: {serverIp:127.0.0.1 serverPort:8848 serverGrpcPort:9848}
	reServerInfo    = regexp.MustCompile(`serverIp:(\S+) serverPort:(\d+)`)
	reConnected     = regexp.MustCompile(`success to connect (?:to server .* on start up|a server .*), connectionId=(\S+)`)
	reAbandon       = regexp.MustCompile(`abandon prev connection, .*connectionId is (\S+)`)
	reRenotified    = regexp.MustCompile(`server check success, currentServer is`)
	reSwitching     = regexp.MustCompile(`try to re connect to a new server|recommend server is not in server list`)
	reConnectFailed = regexp.MustCompile(`(?i)connect (attempt|to server) fail`)
	reUnhealthy     = regexp.MustCompile(`server healthy check fail|request stream onCompleted, switch server|request stream error, switch server|Connection is unregistered, switch server`)
)

type hookLogger struct {
	st *agentState
	mu sync.Mutex
}

func (l *hookLogger) emit(level, msg string) {
	l.mu.Lock()
	fmt.Fprintf(os.Stderr, "%s %s nacos-sdk-go: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), level, msg)
	l.mu.Unlock()
	l.observe(time.Now(), level, msg)
}

func (l *hookLogger) observe(at time.Time, level, msg string) {
	st := l.st
	record := func(kind string, server *string, detail any) { st.recordAt(at, kind, server, detail) }
	switch {
	case reConnected.MatchString(msg):
		id := reConnected.FindStringSubmatch(msg)[1]
		var server *string
		if m := reServerInfo.FindStringSubmatch(msg); m != nil {
			server = strp(m[1] + ":" + m[2])
		}
		st.mu.Lock()
		st.status, st.server, st.connectionID = "RUNNING", server, strp(id)
		st.mu.Unlock()
		record("connected", server, map[string]any{"connection_id": id, "source": "sdk log: " + msg})
	case reAbandon.MatchString(msg):
		id := reAbandon.FindStringSubmatch(msg)[1]
		st.mu.Lock()
		server := st.server
		st.mu.Unlock()
		record("disconnected", server, map[string]any{"connection_id": id, "source": "sdk log: " + msg})
	case reRenotified.MatchString(msg):
		st.mu.Lock()
		st.status = "RUNNING"
		server, id := st.server, st.connectionID
		st.mu.Unlock()
		record("connected", server, map[string]any{"connection_id": id, "renotified": true, "source": "sdk log: " + msg})
	case reSwitching.MatchString(msg):
		st.mu.Lock()
		if st.status == "RUNNING" {
			st.status = "UNHEALTHY"
		}
		server := st.server
		st.mu.Unlock()
		record("switching", server, map[string]any{"source": "sdk log: " + msg})
	case reUnhealthy.MatchString(msg):
		st.mu.Lock()
		if st.status == "RUNNING" {
			st.status = "UNHEALTHY"
		}
		server := st.server
		st.mu.Unlock()
		record("error", server, map[string]any{"level": level, "message": msg})
	case level == "WARN" || level == "ERROR":
		st.mu.Lock()
		server := st.server
		st.mu.Unlock()
		kind := "error"
		if reConnectFailed.MatchString(msg) { // the SDK's wording for one failed attempt: the contract's event
			kind = "connect_failed"
		}
		record(kind, server, map[string]any{"level": level, "message": msg})
	}
}

// replay feeds the SDK's own log file (LogDir/nacos-sdk.log, zap console format: time TAB level
// TAB caller TAB message) through observe. v2.2.7's InitLogger replaces a logger set before the
// client is created, so there the hook is installed after NewNamingClient returns and the
// start-up statements are read back from the file the SDK wrote them to.
func (l *hookLogger) replay(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nacosagent: cannot replay the SDK log %s: %v\n", path, err)
		return
	}
	for _, line := range strings.Split(string(raw), "\n") {
		fields := strings.SplitN(line, "\t", 4)
		if len(fields) != 4 {
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000Z0700", fields[0])
		if err != nil {
			at = time.Now()
		}
		msg := strings.TrimRight(fields[3], " ")
		fmt.Fprintf(os.Stderr, "%s %s nacos-sdk-go (replayed from %s): %s\n", fields[0], fields[1], filepath.Base(path), msg)
		l.observe(at, fields[1], msg)
	}
}

func (l *hookLogger) Info(args ...interface{})  { l.emit("INFO", fmt.Sprint(args...)) }
func (l *hookLogger) Warn(args ...interface{})  { l.emit("WARN", fmt.Sprint(args...)) }
func (l *hookLogger) Error(args ...interface{}) { l.emit("ERROR", fmt.Sprint(args...)) }
func (l *hookLogger) Debug(args ...interface{}) {}
func (l *hookLogger) Infof(f string, args ...interface{}) {
	l.emit("INFO", fmt.Sprintf(f, args...))
}
func (l *hookLogger) Warnf(f string, args ...interface{}) {
	l.emit("WARN", fmt.Sprintf(f, args...))
}
func (l *hookLogger) Errorf(f string, args ...interface{}) {
	l.emit("ERROR", fmt.Sprintf(f, args...))
}
func (l *hookLogger) Debugf(f string, args ...interface{}) {}
func (l *hookLogger) Close() error                         { return nil }

// ---- agent ------------------------------------------------------------------------------------

type agent struct {
	st        *agentState
	hook      *hookLogger
	mu        sync.Mutex
	client    naming_client.INamingClient
	shutdown  bool
	stop      chan struct{}
	stopOnce  sync.Once
	timeoutMs uint64
}

func (a *agent) start(cc constant.ClientConfig, scs []constant.ServerConfig) {
	client, err := clients.NewNamingClient(vo.NacosClientParam{ClientConfig: &cc, ServerConfigs: scs})
	if logger.GetLogger() != logger.Logger(a.hook) { // v2.2.7: its InitLogger replaced ours
		logger.SetLogger(a.hook)
		a.hook.replay(filepath.Join(cc.LogDir, constant.LOG_FILE_NAME))
	}
	if err != nil {
		a.st.record("error", nil, map[string]any{"what": "library start failed", "reason": err.Error()})
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.shutdown {
		client.CloseClient()
		return
	}
	a.client = client
}

func (a *agent) request(body map[string]any) map[string]any {
	kind := "list_services"
	if t, ok := body["type"].(string); ok && t != "" {
		kind = t
	}
	out := map[string]any{"type": kind, "ok": false, "error_code": nil}
	a.mu.Lock()
	client, down := a.client, a.shutdown
	a.mu.Unlock()
	started := time.Now()
	switch {
	case down:
		out["error"] = "agent is shut down"
	case client == nil:
		out["error"] = "library not started yet"
	case kind == "list_services" || kind == "ServiceListRequest":
		list, err := client.GetAllServicesInfo(vo.GetAllServiceInfoParam{PageNo: 1, PageSize: 10})
		if err != nil {
			out["error"] = err.Error()
		} else {
			out["ok"] = true
			out["services"] = list.Count
		}
	default:
		out["error"] = "unsupported type " + kind + "; use list_services (the SDK's public API gives no per-call HealthCheck)"
	}
	out["ms"] = float64(time.Since(started).Microseconds()) / 1000.0
	return out
}

func (a *agent) close() {
	a.mu.Lock()
	client := a.client
	already := a.shutdown
	a.shutdown = true
	a.mu.Unlock()
	if already {
		return
	}
	if client != nil {
		client.CloseClient()
	}
	a.st.mu.Lock()
	a.st.status, a.st.server, a.st.connectionID = "SHUTDOWN", nil, nil
	a.st.mu.Unlock()
}

// ---- control HTTP -----------------------------------------------------------------------------

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (a *agent) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/state", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			writeJSON(w, 405, map[string]any{"error": "use GET"})
			return
		}
		since := 0
		if raw := r.URL.Query().Get("since"); raw != "" {
			n, err := strconv.Atoi(raw)
			if err != nil || n < 0 {
				writeJSON(w, 400, map[string]any{"error": "since must be a non-negative integer, got " + strconv.Quote(raw)})
				return
			}
			since = n
		}
		writeJSON(w, 200, a.st.snapshot(since))
	})
	mux.HandleFunc("/request", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeJSON(w, 405, map[string]any{"error": "use POST"})
			return
		}
		raw, _ := io.ReadAll(r.Body)
		body := map[string]any{}
		if strings.TrimSpace(string(raw)) != "" {
			if err := json.Unmarshal(raw, &body); err != nil {
				writeJSON(w, 400, map[string]any{"error": "body must be a JSON object: " + err.Error()})
				return
			}
		}
		writeJSON(w, 200, a.request(body))
	})
	mux.HandleFunc("/shutdown", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		writeJSON(w, 200, map[string]any{"ok": true})
		a.stopOnce.Do(func() { close(a.stop) })
	})
	return mux
}

// ---- main -------------------------------------------------------------------------------------

func parseServers(list string) ([]constant.ServerConfig, error) {
	var out []constant.ServerConfig
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		host, portText, err := net.SplitHostPort(part)
		if err != nil {
			return nil, fmt.Errorf("server %q: %v", part, err)
		}
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !(ip.IsLoopback() || harnessNamespaces.Contains(ip))) {
			return nil, fmt.Errorf("server %q is not on loopback (127.0.0.0/8) or in a harness namespace (198.18.0.0/15)", part)
		}
		port, err := strconv.ParseUint(portText, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("server %q: bad port", part)
		}
		out = append(out, *constant.NewServerConfig(host, port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no servers in %q", list)
	}
	return out, nil
}

// reapStaleWorkDirs removes default work dirs whose agent process is gone (SIGKILLed).
func reapStaleWorkDirs(parent string) {
	entries, _ := filepath.Glob(filepath.Join(parent, workDirPrefix+"*"))
	for _, dir := range entries {
		rest := strings.TrimPrefix(filepath.Base(dir), workDirPrefix)
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			_ = os.RemoveAll(dir)
		}
	}
}

func main() {
	servers := flag.String("servers", "", "ip:mainPort[,ip:mainPort...] (loopback, or a harness namespace in 198.18.0.0/15)")
	controlPort := flag.Int("control-port", 0, "control HTTP port on 127.0.0.1")
	requestTimeout := flag.Int("request-timeout-ms", 0, "ClientConfig.TimeoutMs (SDK default 10000)")
	serverCheckTimeout := flag.Int("server-check-timeout-ms", 0, "env "+serverCheckTimeoutEnv+" (SDK default 3000)")
	appName := flag.String("app-name", "", "ClientConfig.AppName (request header only; no AppName label)")
	workDirFlag := flag.String("work-dir", "", "SDK cache dir (default: a temp dir removed at exit)")
	flag.Parse()
	if *servers == "" || *controlPort == 0 {
		fmt.Fprintln(os.Stderr, "nacosagent: --servers and --control-port are required")
		os.Exit(2)
	}
	scs, err := parseServers(*servers)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nacosagent:", err)
		os.Exit(2)
	}
	if *serverCheckTimeout > 0 {
		_ = os.Setenv(serverCheckTimeoutEnv, strconv.Itoa(*serverCheckTimeout))
	}
	ownDir := *workDirFlag == ""
	workDir := *workDirFlag
	if ownDir {
		reapStaleWorkDirs(os.TempDir())
		workDir, err = os.MkdirTemp("", fmt.Sprintf("%s%d-", workDirPrefix, os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "nacosagent: work dir:", err)
			os.Exit(1)
		}
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "nacosagent: work dir:", err)
		os.Exit(1)
	}
	defer func() {
		if ownDir {
			_ = os.RemoveAll(workDir)
		}
	}()

	st := &agentState{status: "STARTING", meta: map[string]any{
		"client_ip": nil, "client_version": constant.CLIENT_VERSION, "labels": nil,
		"app_name": nil, "tenant": nil, "library": "nacos-sdk-go " + strings.TrimPrefix(constant.CLIENT_VERSION, "Nacos-Go-Client:"),
	}}
	hook := &hookLogger{st: st}
	logger.SetLogger(hook) // before the client: v2.3.5's InitLogger keeps it (v2.2.7's does not: see start)
	if ip := util.LocalIP(); ip != "" {
		st.meta["client_ip"] = ip
	}

	a := &agent{st: st, hook: hook, stop: make(chan struct{})}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *controlPort))
	if err != nil {
		fmt.Fprintln(os.Stderr, "nacosagent: control port:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "nacosagent: control on 127.0.0.1:%d, %s, servers %s, work dir %s\n",
		*controlPort, st.meta["library"], *servers, workDir)

	cc := constant.ClientConfig{
		NotLoadCacheAtStart: true,
		CacheDir:            filepath.Join(workDir, "cache"),
		LogDir:              filepath.Join(workDir, "logs"),
		LogLevel:            "info",
		AppName:             *appName,
	}
	if *requestTimeout > 0 {
		cc.TimeoutMs = uint64(*requestTimeout)
	}
	go a.start(cc, scs)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-a.stop:
	case <-sigs:
	}
	a.close()
	_ = srv.Close()
	fmt.Fprintln(os.Stderr, "nacosagent: shut down")
	if ownDir {
		_ = os.RemoveAll(workDir)
	}
	os.Exit(0)
}
