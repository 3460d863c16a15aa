/*
 * nacos-client agent over the real Java client, com.alibaba.nacos:nacos-client (SPEC §4.3).
 *
 *   java -Dnacos.remote.client.grpc.connect.keep.alive=5000 ... -cp <classes>:<lib>/* NacosClientAgent \
 *       --servers 127.0.0.1:P[,...] --control-port C [--work-dir DIR] [--log-level INFO]
 *
 * One source for every pinned version (2.2.4 and 2.5.1; harness/agents/build_nacos.py builds it
 * once per version against that version's jars). The library does the work; the agent starts a
 * naming client with NamingFactory.createNamingService(props) (serverAddr = the list, no login,
 * no endpoint), observes it and forwards one naming query on demand.
 *
 * Knobs are the library's own JVM system properties ({jvm_props} in the manifests):
 * nacos.remote.client.grpc.{connect.keep.alive, health.timeout, health.retry, server.check.timeout,
 * timeout, retry.times}, com.alibaba.nacos.client.local.ip (what NetUtils.localIP() puts in
 * metadata.clientIp) and project.name (AppNameUtils -> the AppName label). 2.2.4 reads the
 * nacos.remote.client.grpc.* ones from System properties only (research §4.1); 2.5.1 from the
 * Properties handed to createNamingService, which include the JVM's, and the agent also copies
 * them there.
 *
 * Hooks (public API of the library, plus its own log statements where that API stops):
 * - the naming client's RpcClient: RpcClientFactory.getAllClientEntries() (the only RpcClient in
 *   this process whose getLabels() say module=naming). A watcher thread polls for it while
 *   createNamingService runs, so the hooks below are registered after the client is created and
 *   before rpcClient.start() has connected (the library registers its own redo listener at the
 *   same point); if the start-up CONNECTED event was dispatched before that anyway, one
 *   `connected` event is recorded from isRunning() with detail.source saying so.
 * - events connected/disconnected: a ConnectionEventListener (RpcClient.registerConnectionListener).
 *   2.2.4's callbacks take no argument, 2.3+'s take the Connection; this class has both shapes.
 *   The event's server is getCurrentServer() at notification time; its connection id is the
 *   Connection's (2.3+) or the one the library logged (2.2.4; see connection_id below).
 * - event reset_received: a ServerRequestHandler (RpcClient.registerServerRequestHandler) that
 *   records every ConnectResetRequest (serverIp, serverPort, requestId) and returns null, so the
 *   library's own ConnectResetRequestHandler still answers it. (The library registers that
 *   handler only after its start-up connection is made; a reset pushed before then is
 *   answered by nobody: "Fail to process server request" in the log, SR-14.)
 * - events switching/error: the library's log records. The agent binds slf4j to
 *   java.util.logging (slf4j-jdk14) and sets nacos.logging.default.config.enabled=false, so the
 *   client's loggers land in JUL: "Try to reconnect to a new server" (RpcClient.reconnect) is a
 *   `switching`; a SEVERE record of a com.alibaba.nacos logger, or a WARNING one that reports a
 *   failure (fail/error/exception/timeout), an `error`. Every record is also printed to stderr
 *   (the peer log).
 * - status: isShutdown() -> SHUTDOWN, isRunning() -> RUNNING, else STARTING until the first
 *   connection, UNHEALTHY after (the RpcClientStatus itself is protected).
 * - server: getCurrentServer() (serverIp:serverPort, the main port). connection_id: while RUNNING,
 *   the id the library logged as it installed the current connection (see snapshot); otherwise the
 *   id of the last onConnected (cleared by an onDisConnect of the same id). 2.3+ passes
 *   the Connection (getConnectionId()). 2.2.4 passes nothing and keeps currentConnection in a
 *   protected field, so there the id is the one the library itself states in its log right
 *   before installing the connection ("Success to connect ..., connectionId = X"; the
 *   disconnected one from "Abandon prev connection, ..., connectionId is X"). Without an id the
 *   suites cannot tell a switch from no switch (a null id made SR-06/07/15/18 FAIL falsely).
 * - meta: client_ip NetUtils.localIP() (localIp() from 3.0), client_version VersionUtils.getFullClientVersion(),
 *   labels getLabels(), app_name the AppName label, tenant getTenant().
 * - POST /request: {"type": "list_instances"} (default; also "ServiceQueryRequest") is
 *   NamingService.getAllInstances(probe, subscribe=false): one ServiceQueryRequest through the
 *   library's request path (its retries, its 301 -> switch). "HealthCheckRequest" goes through the
 *   public RpcClient.request(request, timeout_ms). A NacosException's getErrCode() is the
 *   error_code.
 *
 * Files: JM.SNAPSHOT.PATH and JM.LOG.PATH point into --work-dir (default: a temp dir named after
 * the pid, removed at exit; dirs of agents that were SIGKILLed are reaped by the next agent), so
 * nothing is written under the user's home. Control HTTP is the JDK's com.sun.net.httpserver on
 * 127.0.0.1.
 */

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.exception.NacosException;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.remote.request.ConnectResetRequest;
import com.alibaba.nacos.api.remote.request.HealthCheckRequest;
import com.alibaba.nacos.api.remote.request.Request;
import com.alibaba.nacos.api.remote.response.Response;
import com.alibaba.nacos.api.utils.NetUtils;
import com.alibaba.nacos.common.remote.client.Connection;
import com.alibaba.nacos.common.remote.client.ConnectionEventListener;
import com.alibaba.nacos.common.remote.client.RpcClient;
import com.alibaba.nacos.common.remote.client.RpcClientFactory;
import com.alibaba.nacos.common.remote.client.ServerRequestHandler;
import com.alibaba.nacos.common.utils.VersionUtils;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.logging.Formatter;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

public final class NacosClientAgent {

    static final String PROBE_SERVICE = "connformance-probe";
    static final String WORK_DIR_PREFIX = "connformance-nacos-java-";
    static final Pattern WORK_DIR_RE = Pattern.compile(Pattern.quote(WORK_DIR_PREFIX) + "(\\d+)-.*");
    static final String GRPC_PREFIX = "nacos.remote.client.grpc.";
    static final Pattern SWITCHING = Pattern.compile("Try to reconnect to a new server");
    // RpcClient.start / reconnect, just before currentConnection is set (2.2.4 and 2.5.1 alike).
    static final Pattern CONNECTED_ID = Pattern.compile(
            "Success to connect (?:to server \\[([^\\]]*)\\] on start up|a server \\[([^\\]]*)\\]), connectionId = (\\S+)");
    // RpcClient.reconnect, just before closeConnection(old).
    static final Pattern ABANDONED_ID = Pattern.compile("Abandon prev connection, server is \\S+, connectionId is (\\S+)");
    // WARNING records that report a failure (e.g. "Fail to connect to server on start up"); the
    // redo service's "Grpc connection disconnect, mark to redo" is not one.
    static final Pattern FAILURE = Pattern.compile("fail|error|exception|timeout", Pattern.CASE_INSENSITIVE);
    // RpcClient: "Fail to connect to server on start up ..." / "... connect to server fail ..." per attempt
    // One line per failed attempt: GrpcClient.serverCheck's "Server check fail, please check server
    // ..." (2.2.4 GrpcClient.java:223, 2.5.1 :239). RpcClient's "Fail to connect server, after
    // trying N times" is a per-pass summary, not an attempt.
    static final Pattern CONNECT_FAILED = Pattern.compile("Server check fail|connect (attempt|to server) fail",
            Pattern.CASE_INSENSITIVE);
    static final ObjectMapper JSON = new ObjectMapper();

    // ---- state -------------------------------------------------------------------------------

    /** What GET /state reports. Written from library threads, read by the HTTP threads. */
    static final class State {
        private final List<Map<String, Object>> events = new ArrayList<>();
        volatile String connectionId;       // set by the listener's events (see Listener)
        volatile String loggedConnectionId; // the library's "Success to connect ..., connectionId = X"
        volatile String loggedServer; // ... and the server it names in the same line ("[ip:port]")
        volatile String loggedAbandonedId;  // the library's "Abandon prev connection, ..., connectionId is X"
        volatile boolean everConnected;
        volatile boolean shutdown;
        final Map<String, Object> meta = new LinkedHashMap<>();

        synchronized void record(String kind, String server, Object detail) {
            Map<String, Object> event = new LinkedHashMap<>();
            event.put("t_ms", System.currentTimeMillis());
            event.put("kind", kind);
            event.put("server", server);
            event.put("detail", detail);
            events.add(event);
        }

        synchronized List<Map<String, Object>> since(int from) {
            return new ArrayList<>(events.subList(Math.min(from, events.size()), events.size()));
        }

        synchronized int total() {
            return events.size();
        }

        synchronized boolean has(String kind) {
            return events.stream().anyMatch(e -> kind.equals(e.get("kind")));
        }
    }

    final State state = new State();
    final String servers;
    final Path workDir;
    final Properties props = new Properties();
    volatile NamingService naming;
    volatile RpcClient rpc;
    volatile boolean hooked;
    final CountDownLatch stop = new CountDownLatch(1);

    NacosClientAgent(String servers, Path workDir) {
        this.servers = servers;
        this.workDir = workDir;
        state.meta.put("client_ip", localIp());
        state.meta.put("client_version", VersionUtils.getFullClientVersion());
        state.meta.put("labels", null);
        state.meta.put("app_name", null);
        state.meta.put("tenant", null);
        state.meta.put("library", "nacos-client " + VersionUtils.version);
    }

    // ---- hooks ---------------------------------------------------------------------------------

    static String address(RpcClient.ServerInfo info) {
        return info == null ? null : info.getServerIp() + ":" + info.getServerPort();
    }

    String currentServer() {
        RpcClient client = rpc;
        return client == null ? null : address(client.getCurrentServer());
    }

    /** The library's connection events; both the 2.2 (no argument) and 2.3+ (Connection) shapes. */
    final class Listener implements ConnectionEventListener {
        public void onConnected() {
            connected(null);
        }

        public void onDisConnect() {
            disconnected(null);
        }

        public void onConnected(Connection connection) {
            connected(connection);
        }

        public void onDisConnect(Connection connection) {
            disconnected(connection);
        }

        private void connected(Connection connection) {
            state.everConnected = true;
            Map<String, Object> detail = new LinkedHashMap<>();
            String id = connection != null ? connection.getConnectionId() : state.loggedConnectionId;
            state.connectionId = id;
            detail.put("connection_id", id);
            detail.put("source", "ConnectionEventListener.onConnected"
                    + (connection == null ? " (2.2: no Connection argument; id from the library's log)" : ""));
            state.record("connected", currentServer(), detail);
        }

        private void disconnected(Connection connection) {
            Map<String, Object> detail = new LinkedHashMap<>();
            String id = connection != null ? connection.getConnectionId() : state.loggedAbandonedId;
            if (id == null || id.equals(state.connectionId)) {
                state.connectionId = null;
            }
            detail.put("connection_id", id);
            detail.put("source", "ConnectionEventListener.onDisConnect"
                    + (connection == null ? " (2.2: no Connection argument; id from the library's log)" : ""));
            // 2.2.4 passes no connection and has already installed the next one; the server is
            // the library's current one at notification time.
            state.record("disconnected", currentServer(), detail);
        }
    }

    /** Sees every server push first-or-later; answers none (returns null). */
    final class ResetObserver implements ServerRequestHandler {
        public Response requestReply(Request request) {
            observe(request);
            return null;
        }

        public Response requestReply(Request request, Connection connection) {
            observe(request);
            return null;
        }

        private void observe(Request request) {
            if (request instanceof ConnectResetRequest) {
                ConnectResetRequest reset = (ConnectResetRequest) request;
                Map<String, Object> detail = new LinkedHashMap<>();
                detail.put("requestId", reset.getRequestId());
                detail.put("serverIp", reset.getServerIp());
                detail.put("serverPort", reset.getServerPort());
                detail.put("running", rpc != null && rpc.isRunning());
                state.record("reset_received", currentServer(), detail);
            }
        }
    }

    /** Library log records (slf4j -> JUL): stderr, plus switching/error events. */
    final class LogHook extends Handler {
        final PrintStream out = System.err;

        @Override
        public void publish(LogRecord record) {
            String message = format(record);
            out.println(Instant.ofEpochMilli(record.getMillis()) + " " + record.getLevel() + " "
                    + record.getLoggerName() + ": " + message
                    + (record.getThrown() == null ? "" : " | " + record.getThrown()));
            String logger = record.getLoggerName() == null ? "" : record.getLoggerName();
            if (!logger.startsWith("com.alibaba.nacos")) {
                return;
            }
            Matcher connectedId = CONNECTED_ID.matcher(message);
            Matcher abandonedId = ABANDONED_ID.matcher(message);
            if (connectedId.find()) {
                state.loggedServer = connectedId.group(1) != null ? connectedId.group(1) : connectedId.group(2);
                state.loggedConnectionId = connectedId.group(3);
            } else if (abandonedId.find()) {
                state.loggedAbandonedId = abandonedId.group(1);
            } else if (SWITCHING.matcher(message).find()) {
                Map<String, Object> detail = new LinkedHashMap<>();
                detail.put("logger", logger);
                detail.put("message", message);
                state.record("switching", currentServer(), detail);
            } else if (record.getLevel().intValue() >= Level.SEVERE.intValue()
                    || (record.getLevel().intValue() >= Level.WARNING.intValue() && FAILURE.matcher(message).find())) {
                Map<String, Object> detail = new LinkedHashMap<>();
                detail.put("logger", logger);
                detail.put("level", record.getLevel().getName());
                detail.put("message", message);
                if (record.getThrown() != null) {
                    detail.put("exception", record.getThrown().toString());
                }
                // The library's wording for one failed connection attempt is the contract's event.
                state.record(CONNECT_FAILED.matcher(message).find() ? "connect_failed" : "error", currentServer(), detail);
            }
        }

        private String format(LogRecord record) {
            try {
                return new Formatter() {
                    @Override
                    public String format(LogRecord r) {
                        return formatMessage(r);
                    }
                }.format(record);
            } catch (RuntimeException e) {
                return String.valueOf(record.getMessage());
            }
        }

        @Override
        public void flush() {
            out.flush();
        }

        @Override
        public void close() {
            flush();
        }
    }

    void installLogHook(Level level) {
        LogManager.getLogManager().reset();
        Logger root = Logger.getLogger("");
        root.setLevel(level);
        LogHook hook = new LogHook();
        hook.setLevel(Level.ALL);
        root.addHandler(hook);
    }

    /** Register the listener and the reset observer on the naming RpcClient once it exists. */
    boolean tryHook() {
        if (hooked) {
            return true;
        }
        for (Map.Entry<String, RpcClient> entry : RpcClientFactory.getAllClientEntries()) {
            RpcClient client = entry.getValue();
            Map<String, String> labels = client.getLabels();
            if (labels != null && "naming".equals(labels.get("module"))) {
                rpc = client;
                client.registerConnectionListener(new Listener());
                client.registerServerRequestHandler(new ResetObserver());
                hooked = true;
                return true;
            }
        }
        return false;
    }

    void start() {
        Thread watcher = new Thread(() -> {
            while (!hooked && naming == null && stop.getCount() > 0) {
                if (tryHook()) {
                    return;
                }
                try {
                    Thread.sleep(1);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "agent-hook-watcher");
        watcher.setDaemon(true);
        watcher.start();

        props.setProperty(PropertyKeyConst.SERVER_ADDR, servers);
        props.setProperty("JM.SNAPSHOT.PATH", workDir.resolve("cache").toString());
        props.setProperty("JM.LOG.PATH", workDir.resolve("logs").toString());
        props.setProperty("namingLoadCacheAtStart", "false");
        for (String key : System.getProperties().stringPropertyNames()) {
            if (key.startsWith(GRPC_PREFIX)) {
                props.setProperty(key, System.getProperty(key));
            }
        }
        try {
            naming = NamingFactory.createNamingService(props);
        } catch (Throwable e) {
            Map<String, Object> detail = new LinkedHashMap<>();
            detail.put("what", "library start failed");
            detail.put("reason", e.toString());
            state.record("error", null, detail);
            e.printStackTrace();
            return;
        }
        try {
            watcher.join(1000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (!tryHook()) {
            state.record("error", null, Map.of("what", "no naming RpcClient in RpcClientFactory.getAllClientEntries()"));
            return;
        }
        RpcClient client = rpc;
        state.meta.put("labels", new LinkedHashMap<>(client.getLabels()));
        state.meta.put("app_name", client.getLabels().get("AppName"));
        state.meta.put("tenant", client.getTenant());
        // The start-up CONNECTED event may have been dispatched before the listener was added.
        for (int i = 0; i < 20 && !state.has("connected"); i++) {
            try {
                Thread.sleep(10);
            } catch (InterruptedException e) {
                break;
            }
        }
        if (!state.has("connected") && client.isRunning()) {
            state.everConnected = true;
            Map<String, Object> detail = new LinkedHashMap<>();
            state.connectionId = state.loggedConnectionId;
            detail.put("connection_id", state.connectionId);
            detail.put("source", "RpcClient.isRunning() after start: the start-up CONNECTED event was dispatched "
                    + "before the agent's listener was registered (id from the library's log)");
            state.record("connected", currentServer(), detail);
        }
    }

    String status() {
        RpcClient client = rpc;
        if (state.shutdown || (client != null && client.isShutdown())) {
            return "SHUTDOWN";
        }
        if (client != null && client.isRunning()) {
            state.everConnected = true;
            return "RUNNING";
        }
        return state.everConnected ? "UNHEALTHY" : "STARTING";
    }

    Map<String, Object> snapshot(int since) {
        Map<String, Object> out = new LinkedHashMap<>();
        String status = status();
        out.put("status", status);
        // RUNNING and the new current server are set before the CONNECTED event (and, on a switch,
        // the old connection's DISCONNECTED) reach the listener: in that window the listener still
        // holds the previous id (or none). The id the library logged right before installing the
        // connection ("Success to connect [server], connectionId = X") is the current one, and the
        // server is the one that line names: between the line and `currentConnection = new` (a
        // reset's reconnect keeps RUNNING throughout) getCurrentServer() still names the old one.
        String id = state.connectionId;
        String server = currentServer();
        if ("RUNNING".equals(status) && state.loggedConnectionId != null) {
            id = state.loggedConnectionId;
            server = state.loggedServer != null ? state.loggedServer : server;
        }
        out.put("server", "SHUTDOWN".equals(status) ? null : server);
        out.put("connection_id", "SHUTDOWN".equals(status) ? null : id);
        out.put("events", state.since(since));
        out.put("events_total", state.total());
        out.put("meta", state.meta);
        return out;
    }

    Map<String, Object> request(Map<String, Object> body) {
        Map<String, Object> out = new LinkedHashMap<>();
        String type = String.valueOf(body.getOrDefault("type", "list_instances"));
        long timeoutMs = body.get("timeout_ms") instanceof Number ? ((Number) body.get("timeout_ms")).longValue()
                : Long.getLong(GRPC_PREFIX + "timeout", 3000L);
        long started = System.nanoTime();
        out.put("type", type);
        if (state.shutdown) {
            out.put("ok", false);
            out.put("error_code", null);
            out.put("error", "agent is shut down");
        } else if (naming == null || rpc == null) {
            out.put("ok", false);
            out.put("error_code", null);
            out.put("error", "library not started yet");
        } else {
            try {
                if ("list_instances".equals(type) || "ServiceQueryRequest".equals(type)) {
                    out.put("instances", naming.getAllInstances(PROBE_SERVICE, false).size());
                } else if ("HealthCheckRequest".equals(type)) {
                    Response response = rpc.request(new HealthCheckRequest(), timeoutMs);
                    if (response == null || !response.isSuccess()) {
                        out.put("ok", false);
                        out.put("error_code", response == null ? null : response.getErrorCode());
                        out.put("error", response == null ? "no response" : response.getMessage());
                    }
                } else {
                    out.put("ok", false);
                    out.put("error_code", null);
                    out.put("error", "unsupported type " + type + "; use list_instances, ServiceQueryRequest or HealthCheckRequest");
                }
                out.putIfAbsent("ok", true);
                out.putIfAbsent("error_code", null);
            } catch (NacosException e) {
                out.put("ok", false);
                out.put("error_code", e.getErrCode());
                out.put("error", e.getErrMsg());
            } catch (Throwable e) {
                out.put("ok", false);
                out.put("error_code", null);
                out.put("error", e.toString());
            }
        }
        out.put("ms", (System.nanoTime() - started) / 1e6);
        return out;
    }

    void shutdown() {
        if (state.shutdown) {
            return;
        }
        NamingService service = naming;
        if (service != null) {
            try {
                service.shutDown();
            } catch (Throwable e) {
                System.err.println("NacosClientAgent: library shutdown failed: " + e);
            }
        }
        state.shutdown = true;
    }

    // ---- control HTTP --------------------------------------------------------------------------

    static void reply(HttpExchange exchange, int status, Object body) throws IOException {
        byte[] bytes = JSON.writeValueAsBytes(body);
        exchange.getResponseHeaders().set("Content-Type", "application/json");
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream os = exchange.getResponseBody()) {
            os.write(bytes);
        }
    }

    static String readBody(HttpExchange exchange) throws IOException {
        try (InputStream in = exchange.getRequestBody()) {
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }

    HttpServer serve(int port) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port), 64);
        server.createContext("/state", exchange -> {
            try {
                if (!"GET".equals(exchange.getRequestMethod())) {
                    reply(exchange, 405, Map.of("error", "use GET"));
                    return;
                }
                int since = 0;
                String query = exchange.getRequestURI().getRawQuery();
                if (query != null) {
                    for (String part : query.split("&")) {
                        if (part.startsWith("since=")) {
                            try {
                                since = Integer.parseInt(part.substring(6));
                                if (since < 0) {
                                    throw new NumberFormatException();
                                }
                            } catch (NumberFormatException e) {
                                reply(exchange, 400, Map.of("error", "since must be a non-negative integer, got " + part.substring(6)));
                                return;
                            }
                        }
                    }
                }
                reply(exchange, 200, snapshot(since));
            } finally {
                exchange.close();
            }
        });
        server.createContext("/request", exchange -> {
            try {
                if (!"POST".equals(exchange.getRequestMethod())) {
                    reply(exchange, 405, Map.of("error", "use POST"));
                    return;
                }
                String text = readBody(exchange);
                Map<String, Object> body = new LinkedHashMap<>();
                if (!text.isBlank()) {
                    try {
                        Object parsed = JSON.readValue(text, Object.class);
                        if (!(parsed instanceof Map)) {
                            reply(exchange, 400, Map.of("error", "body must be a JSON object"));
                            return;
                        }
                        @SuppressWarnings("unchecked")
                        Map<String, Object> map = (Map<String, Object>) parsed;
                        body.putAll(map);
                    } catch (IOException e) {
                        reply(exchange, 400, Map.of("error", "body is not JSON: " + e.getMessage()));
                        return;
                    }
                }
                reply(exchange, 200, request(body));
            } finally {
                exchange.close();
            }
        });
        server.createContext("/shutdown", exchange -> {
            try {
                readBody(exchange);
                reply(exchange, 200, Map.of("ok", true));
            } finally {
                exchange.close();
                stop.countDown();
            }
        });
        server.setExecutor(Executors.newFixedThreadPool(4, r -> {
            Thread t = new Thread(r, "agent-http");
            t.setDaemon(true);
            return t;
        }));
        server.start();
        return server;
    }

    // ---- files -------------------------------------------------------------------------------

    static void reapStaleWorkDirs(Path parent) {
        try (DirectoryStream<Path> dirs = Files.newDirectoryStream(parent, WORK_DIR_PREFIX + "*")) {
            for (Path dir : dirs) {
                Matcher m = WORK_DIR_RE.matcher(dir.getFileName().toString());
                if (m.matches() && Files.isDirectory(dir)
                        && ProcessHandle.of(Long.parseLong(m.group(1))).isEmpty()) {
                    deleteTree(dir);
                }
            }
        } catch (IOException | RuntimeException e) {
            System.err.println("NacosClientAgent: could not reap old work dirs: " + e);
        }
    }

    static void deleteTree(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
        } catch (IOException | RuntimeException e) {
            // best effort
        }
    }

    // ---- main --------------------------------------------------------------------------------

    static void checkLoopback(String servers) {
        for (String part : servers.split(",")) {
            String entry = part.trim();
            if (entry.isEmpty()) {
                continue;
            }
            String host = entry.contains(":") ? entry.substring(0, entry.lastIndexOf(':')) : entry;
            // 198.18.0.0/15: the network namespaces the harness creates (a packet-level case
            // gives the agent a server's own address there).
            if (!host.startsWith("127.") && !"localhost".equals(host)
                    && !host.startsWith("198.18.") && !host.startsWith("198.19.")) {
                throw new IllegalArgumentException("server " + entry
                        + " is not on loopback (127.0.0.0/8) or in a harness namespace (198.18.0.0/15)");
            }
        }
    }

    /** NetUtils.localIP() (2.x), renamed localIp() in 3.0: the IP the client reports in its setup. */
    static String localIp() {
        for (String name : new String[] {"localIP", "localIp"}) {
            try {
                return (String) NetUtils.class.getMethod(name).invoke(null);
            } catch (NoSuchMethodException e) {
                // the other spelling
            } catch (ReflectiveOperationException e) {
                throw new IllegalStateException("NetUtils." + name + "() failed", e);
            }
        }
        throw new IllegalStateException("nacos-client has neither NetUtils.localIP() nor NetUtils.localIp()");
    }

    public static void main(String[] args) throws Exception {
        String servers = null;
        Integer port = null;
        String workDirArg = null;
        String logLevel = "INFO";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = i + 1 < args.length ? args[i + 1] : null;
            switch (a) {
                case "--servers": servers = v; i++; break;
                case "--control-port": port = Integer.valueOf(v); i++; break;
                case "--work-dir": workDirArg = v; i++; break;
                case "--log-level": logLevel = v; i++; break;
                default:
                    System.err.println("NacosClientAgent: unknown argument " + a
                            + "; usage: --servers ip:port[,...] --control-port N [--work-dir DIR] [--log-level INFO]");
                    System.exit(2);
            }
        }
        if (servers == null || port == null) {
            System.err.println("NacosClientAgent: --servers and --control-port are required");
            System.exit(2);
        }
        try {
            checkLoopback(servers);
        } catch (IllegalArgumentException e) {
            System.err.println("NacosClientAgent: " + e.getMessage());
            System.exit(2);
        }
        boolean ownDir = workDirArg == null;
        Path workDir;
        if (ownDir) {
            Path tmp = Paths.get(System.getProperty("java.io.tmpdir"));
            reapStaleWorkDirs(tmp);
            workDir = Files.createTempDirectory(tmp, WORK_DIR_PREFIX + ProcessHandle.current().pid() + "-");
        } else {
            workDir = Paths.get(workDirArg);
            Files.createDirectories(workDir);
        }
        // Before any library class reads them: files into the work dir, nacos's own logging
        // config off (its records go to JUL through slf4j-jdk14, then to our hook).
        System.setProperty("JM.SNAPSHOT.PATH", workDir.resolve("cache").toString());
        System.setProperty("JM.LOG.PATH", workDir.resolve("logs").toString());
        System.setProperty("nacos.logging.default.config.enabled", "false");

        NacosClientAgent agent = new NacosClientAgent(servers, workDir);
        agent.installLogHook(Level.parse(logLevel.toUpperCase()));
        HttpServer http = agent.serve(port);
        System.err.println("NacosClientAgent: control on 127.0.0.1:" + port + ", " + agent.state.meta.get("library")
                + ", servers " + servers + ", work dir " + workDir);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            agent.stop.countDown();
            agent.shutdown();
            if (ownDir) {
                deleteTree(workDir);
            }
        }, "agent-shutdown-hook"));

        Thread starter = new Thread(agent::start, "agent-start");
        starter.setDaemon(true);
        starter.start();
        agent.stop.await();
        agent.shutdown();
        http.stop(0);
        if (ownDir) {
            deleteTree(workDir);
        }
        System.err.println("NacosClientAgent: shut down");
        System.err.flush();
        // Library threads (gRPC, executors) are not all daemons: leave now that it is shut down.
        Runtime.getRuntime().halt(0);
    }
}
