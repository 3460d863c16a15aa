/*
 * The connformance http-client agent for the JDK's HttpURLConnection (SPEC.md §4.4).
 *
 *   java [-Dhttp.maxConnections=N ...] -cp CLASSES HttpUrlConnectionAgent
 *        --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]
 *
 * ("--url A,B" is the same as "--url A --url B"; a phase's "target" indexes the list.)
 *
 * A thin adapter: the keep-alive cache under test is the JDK's own (sun.net.www.http.KeepAliveCache,
 * one per process). Knobs, from the plan's "knobs" or flags (--max-idle-per-host 3; flags win):
 *
 *   max_idle_per_host  -> http.maxConnections (idle conns kept per destination; JDK default 5;
 *                         the JDK reads values <= 0 as 5, so 0 is unsupported)
 *   keepalive          -> http.keepAlive (false: every request says Connection: close)
 *   idle_timeout_ms    -> http.keepAlive.time.server, in whole seconds (JDK-8278067, in 17.0.x);
 *                         used only when the server sends no Keep-Alive: timeout=N; the cache is
 *                         swept every 5 s, so an idle conn closes between T and T + 5 s
 *   read_error_body    -> read (true, default) or ignore (false) the error stream of a >= 400
 *                         response; ignored, the connection is never returned to the cache
 *   block_when_full    -> false only: there is no limit on concurrent connections to wait at
 *   max_conns_per_host, max_idle_total -> unsupported (no such limit)
 *
 * The same properties given with -D (the manifest's {jvm_props}) are honoured and checked; a -D
 * value that contradicts the plan is a usage error. Every property is set before the first
 * connection, so the JDK's static reads see it.
 *
 * Records have "reused": null and "local_port": null: HttpURLConnection has no public API for
 * either (correlate with the server's view of the peer port instead). The op cancel_burst is
 * unsupported (no way to cancel a request in flight short of disconnect(), which closes idle
 * connections of the cache as a side effect). A phase's "timeout_ms" sets the connect and read
 * timeouts; absent, there are none (the JDK's default).
 *
 * Unsupported knobs or ops print {"unsupported": [names], "detail": {name: why}} before any
 * request and exit 3; a bad command line or plan exits 2.
 *
 * This file also holds the plan/JSON/output kit (Agent) that JavaHttpClientAgent uses: the two are
 * compiled together by `connformance setup` (step java-http-agents).
 */

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;

public final class HttpUrlConnectionAgent {

    public static void main(String[] args) {
        Agent.run("HttpUrlConnectionAgent", args, new UrlConnectionStack());
    }

    /** HttpURLConnection behind the agent contract. */
    static final class UrlConnectionStack implements Stack {
        private boolean readErrorBody = true;

        @Override
        public Map<String, String> configure(Map<String, Object> knobs) throws UsageError {
            Map<String, String> unsupported = new TreeMap<>();
            for (Map.Entry<String, Object> e : knobs.entrySet()) {
                String name = e.getKey();
                Object value = e.getValue();
                switch (name) {
                    case "max_idle_per_host": {
                        long n = Agent.intKnob(name, value, 0);
                        if (n == 0) {
                            unsupported.put(name, "http.maxConnections <= 0 means the default 5 to the JDK; it cannot keep none");
                        } else {
                            Agent.setProperty(name, "http.maxConnections", Long.toString(n));
                        }
                        break;
                    }
                    case "keepalive":
                        Agent.setProperty(name, "http.keepAlive", Boolean.toString(Agent.boolKnob(name, value)));
                        break;
                    case "idle_timeout_ms": {
                        long ms = Agent.intKnob(name, value, 0);
                        if (ms == 0 || ms % 1000 != 0) {
                            unsupported.put(name, "http.keepAlive.time.server takes whole seconds > 0, not " + ms + " ms");
                        } else {
                            Agent.setProperty(name, "http.keepAlive.time.server", Long.toString(ms / 1000));
                        }
                        break;
                    }
                    case "read_error_body":
                        readErrorBody = Agent.boolKnob(name, value);
                        break;
                    case "block_when_full":
                        if (Agent.boolKnob(name, value)) {
                            unsupported.put(name, "HttpURLConnection has no connection limit to wait at");
                        }
                        break;
                    default: // max_conns_per_host, max_idle_total, anything unknown
                        unsupported.put(name, Agent.isKnob(name)
                                ? "HttpURLConnection has no such limit (its only pool setting is the per-destination idle cap)"
                                : "not a knob of the agent contract");
                }
            }
            // A value given only with -D (the manifest's {jvm_props}) must be one the JDK honours too.
            String maxConnections = System.getProperty("http.maxConnections");
            if (maxConnections != null && !knobs.containsKey("max_idle_per_host")) {
                try {
                    if (Long.parseLong(maxConnections.trim()) <= 0) {
                        unsupported.put("max_idle_per_host", "-Dhttp.maxConnections=" + maxConnections.trim()
                                + " means the default 5 to the JDK");
                    }
                } catch (NumberFormatException ex) {
                    throw new UsageError("-Dhttp.maxConnections=" + maxConnections + " is not an integer");
                }
            }
            return unsupported;
        }

        @Override
        public String unsupportedOp(String op) {
            return op.equals("cancel_burst")
                    ? "HttpURLConnection cannot cancel a request in flight (disconnect() also closes idle cached connections)"
                    : null;
        }

        @Override
        public void send(String url, Phase ph, Result r) throws IOException {
            HttpURLConnection c = (HttpURLConnection) new URL(url).openConnection();
            c.setConnectTimeout(ph.timeoutMs); // 0 (absent): no timeout, the JDK's default
            c.setReadTimeout(ph.timeoutMs);
            c.setRequestMethod(ph.method);
            c.setUseCaches(false);
            c.setInstanceFollowRedirects(false); // one record per exchange: a 3xx is an answer
            if (ph.body != null) {
                byte[] body = ph.body.getBytes(StandardCharsets.UTF_8);
                c.setDoOutput(true); // not streaming mode: the JDK's own retry rules apply as in real use
                try (OutputStream out = c.getOutputStream()) {
                    out.write(body);
                }
            }
            int status = c.getResponseCode();
            r.status = status;
            InputStream in = status >= 400 ? c.getErrorStream() : c.getInputStream();
            if (in != null && (status < 400 || readErrorBody)) {
                try (InputStream body = in) {
                    body.transferTo(OutputStream.nullOutputStream()); // EOF hands the conn back to the cache
                }
            }
            // No disconnect(): it would close an idle connection of the cache as a side effect.
        }
    }

    // ---------------------------------------------------------------------------------------------
    // The agent kit shared with JavaHttpClientAgent: plan, knobs, phases, output.
    // ---------------------------------------------------------------------------------------------

    /** One HTTP stack behind the agent contract. */
    interface Stack {
        /** Apply the knobs (before any connection); return those the stack cannot honour, with why. */
        Map<String, String> configure(Map<String, Object> knobs) throws UsageError;

        /** Why the stack cannot run this op, or null when it can (every op, unless it says otherwise). */
        default String unsupportedOp(String op) {
            return null;
        }

        /** Send one request and fill r (status; reused/localPort when known). Throw on failure. */
        void send(String url, Phase ph, Result r) throws Exception;

        /** For cancel_burst: send, but give up (cancel) after cancelAfterMs. */
        default void sendCancelAfter(String url, Phase ph, Result r, int cancelAfterMs) throws Exception {
            throw new UnsupportedOperationException("cancel_burst");
        }
    }

    static final class UsageError extends Exception {
        private static final long serialVersionUID = 1L;

        UsageError(String message) {
            super(message);
        }
    }

    static final class Phase {
        String op;
        int n;
        String path = "";
        String method = "GET";
        String body;
        int target;
        List<Integer> targets = List.of(); // spread_burst: request i goes to targets[i % size]
        int ms;
        int cancelAfterMs;
        int timeoutMs; // 0: none given, the library's default
    }

    static final class Result {
        Integer status;
        String error;
        Boolean reused;
        Integer localPort;
    }

    static final class Agent {
        static final int EXIT_USAGE = 2;
        static final int EXIT_UNSUPPORTED = 3;
        static final String[] KNOBS = {
            "max_conns_per_host", "max_idle_per_host", "max_idle_total", "idle_timeout_ms",
            "keepalive", "block_when_full", "read_error_body",
        };

        private static final PrintStream OUT = new PrintStream(System.out, false, StandardCharsets.UTF_8);

        /** One daemon thread that cancels requests after a delay (cancel_burst), for the stacks that need one. */
        static final java.util.concurrent.ScheduledExecutorService CANCELLER =
                java.util.concurrent.Executors.newSingleThreadScheduledExecutor(r -> {
                    Thread t = new Thread(r, "canceller");
                    t.setDaemon(true);
                    return t;
                });

        static synchronized void emit(String line) {
            OUT.print(line + "\n");
            OUT.flush();
        }

        static void run(String name, String[] args, Stack stack) {
            List<String> urls = new ArrayList<>();
            String planPath = null;
            Map<String, Object> flagKnobs = new LinkedHashMap<>();
            try {
                for (int i = 0; i < args.length; i++) {
                    String a = args[i];
                    if (i + 1 >= args.length) {
                        throw new UsageError("flag " + a + " needs a value");
                    }
                    String v = args[++i];
                    if (a.equals("--url")) { // repeatable; "A,B" is "--url A --url B"
                        for (String one : v.split(",")) {
                            if (!one.isBlank()) {
                                urls.add(one.trim());
                            }
                        }
                    } else if (a.equals("--plan")) {
                        planPath = v;
                    } else if (a.startsWith("--") && isKnob(a.substring(2).replace('-', '_'))) {
                        flagKnobs.put(a.substring(2).replace('-', '_'), flagValue(v));
                    } else {
                        throw new UsageError("unknown flag " + a);
                    }
                }
                if (urls.isEmpty() || planPath == null) {
                    throw new UsageError("usage: " + name + " --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]");
                }
                Map<String, Object> plan = asMap(Json.parse(Files.readString(Path.of(planPath))), "plan");
                for (String key : plan.keySet()) {
                    if (!key.equals("knobs") && !key.equals("phases")) {
                        throw new UsageError("plan: unknown key " + key + " (knobs, phases)");
                    }
                }
                Map<String, Object> knobs = new TreeMap<>();
                if (plan.get("knobs") != null) {
                    knobs.putAll(asMap(plan.get("knobs"), "plan.knobs"));
                }
                knobs.putAll(flagKnobs);
                knobs.values().removeIf(v -> v == null);
                List<Phase> phases = phases(plan.get("phases"), urls.size());

                Map<String, String> unsupported = new TreeMap<>(stack.configure(knobs));
                for (Phase ph : phases) {
                    String why = stack.unsupportedOp(ph.op);
                    if (why != null) {
                        unsupported.put(ph.op, why);
                    }
                }
                if (!unsupported.isEmpty()) {
                    StringBuilder names = new StringBuilder();
                    StringBuilder detail = new StringBuilder();
                    for (Map.Entry<String, String> e : unsupported.entrySet()) {
                        String sep = names.length() > 0 ? ", " : "";
                        names.append(sep).append(Json.quote(e.getKey()));
                        detail.append(sep).append(Json.quote(e.getKey())).append(": ").append(Json.quote(e.getValue()));
                    }
                    emit("{\"unsupported\": [" + names + "], \"detail\": {" + detail + "}}");
                    System.exit(EXIT_UNSUPPORTED);
                }
                for (int i = 0; i < phases.size(); i++) {
                    runPhase(stack, urls, i, phases.get(i));
                }
                emit("{\"done\": true}");
                System.exit(0);
            } catch (UsageError | IOException e) {
                System.err.println(name + ": " + e.getMessage());
                System.exit(EXIT_USAGE);
            } catch (InterruptedException e) {
                System.err.println(name + ": interrupted");
                System.exit(1);
            }
        }

        static void runPhase(Stack stack, List<String> urls, int idx, Phase ph) throws InterruptedException {
            switch (ph.op) {
                case "sleep":
                    Thread.sleep(ph.ms);
                    return;
                case "sequential":
                    for (int i = 0; i < ph.n; i++) {
                        emit(request(stack, urls.get(ph.target), idx, i, ph));
                    }
                    return;
                default: { // burst, cancel_burst, spread_burst: n requests released together
                    CountDownLatch gate = new CountDownLatch(1);
                    List<Thread> threads = new ArrayList<>();
                    for (int i = 0; i < ph.n; i++) {
                        final int n = i;
                        Thread t = new Thread(() -> {
                            try {
                                gate.await();
                            } catch (InterruptedException e) {
                                return;
                            }
                            emit(request(stack, urls.get(targetOf(ph, n)), idx, n, ph));
                        }, "request-" + idx + "-" + i);
                        t.start();
                        threads.add(t);
                    }
                    gate.countDown();
                    for (Thread t : threads) {
                        t.join();
                    }
                }
            }
        }

        static int targetOf(Phase ph, int i) {
            return ph.targets.isEmpty() ? ph.target : ph.targets.get(i % ph.targets.size());
        }

        static String request(Stack stack, String base, int phase, int i, Phase ph) {
            Result r = new Result();
            String url = base.replaceAll("/+$", "") + "/" + ph.path.replaceAll("^/+", "");
            double start = epochMs();
            try {
                if (ph.op.equals("cancel_burst")) {
                    stack.sendCancelAfter(url, ph, r, ph.cancelAfterMs);
                } else {
                    stack.send(url, ph, r);
                }
            } catch (Exception e) {
                String msg = e.getMessage();
                r.error = e.getClass().getName() + (msg == null ? "" : ": " + msg);
            }
            double end = epochMs();
            return "{\"phase\": " + phase + ", \"i\": " + i
                    + ", \"start_ms\": " + String.format("%.3f", start)
                    + ", \"end_ms\": " + String.format("%.3f", end)
                    + ", \"status\": " + r.status
                    + ", \"error\": " + (r.error == null ? "null" : Json.quote(r.error))
                    + ", \"reused\": " + r.reused
                    + ", \"local_port\": " + r.localPort + "}";
        }

        static double epochMs() {
            Instant now = Instant.now();
            return now.getEpochSecond() * 1000.0 + now.getNano() / 1_000_000.0;
        }

        static List<Phase> phases(Object raw, int nurls) throws UsageError {
            List<Phase> out = new ArrayList<>();
            if (raw == null) {
                return out;
            }
            if (!(raw instanceof List)) {
                throw new UsageError("plan.phases: expected a list");
            }
            List<?> list = (List<?>) raw;
            for (int idx = 0; idx < list.size(); idx++) {
                String where = "plan.phases[" + idx + "]";
                Map<String, Object> m = asMap(list.get(idx), where);
                Phase ph = new Phase();
                for (Map.Entry<String, Object> e : m.entrySet()) {
                    String k = e.getKey();
                    Object v = e.getValue();
                    switch (k) {
                        case "op": ph.op = string(v, where + ".op"); break;
                        case "n": ph.n = (int) intKnob(where + ".n", v, 0); break;
                        case "path": ph.path = string(v, where + ".path"); break;
                        case "method": ph.method = string(v, where + ".method"); break;
                        case "body": ph.body = v == null ? null : string(v, where + ".body"); break;
                        case "target": ph.target = (int) intKnob(where + ".target", v, 0); break;
                        case "targets": {
                            if (!(v instanceof List) || ((List<?>) v).isEmpty()) {
                                throw new UsageError(where + ".targets: expected a non-empty list of URL indexes");
                            }
                            List<Integer> ts = new ArrayList<>();
                            for (Object t : (List<?>) v) {
                                ts.add((int) intKnob(where + ".targets[]", t, 0));
                            }
                            ph.targets = ts;
                            break;
                        }
                        case "ms": ph.ms = (int) intKnob(where + ".ms", v, 0); break;
                        case "cancel_after_ms": ph.cancelAfterMs = (int) intKnob(where + ".cancel_after_ms", v, 0); break;
                        case "timeout_ms": ph.timeoutMs = (int) intKnob(where + ".timeout_ms", v, 1); break;
                        default: throw new UsageError(where + ": unknown key " + k);
                    }
                }
                if (ph.op == null || !List.of("burst", "sequential", "sleep", "cancel_burst", "spread_burst").contains(ph.op)) {
                    throw new UsageError(where + ": op must be burst, sequential, sleep, cancel_burst or spread_burst, got " + ph.op);
                }
                if (ph.op.equals("spread_burst") && ph.targets.isEmpty()) {
                    throw new UsageError(where + ": spread_burst needs targets");
                }
                for (int t : ph.targets.isEmpty() ? List.of(ph.target) : ph.targets) {
                    if (t >= nurls) {
                        throw new UsageError(where + ": target " + t + " is not an index of the " + nurls + " --url value(s)");
                    }
                }
                out.add(ph);
            }
            return out;
        }

        /** Set a system property from a knob; a different -D value on the command line is an error. */
        static void setProperty(String knob, String property, String value) throws UsageError {
            String given = System.getProperty(property);
            if (given != null && !given.trim().equals(value)) {
                throw new UsageError("knob " + knob + " wants -D" + property + "=" + value + " but the command line says " + given);
            }
            System.setProperty(property, value);
        }

        static boolean isKnob(String name) {
            return List.of(KNOBS).contains(name);
        }

        static long intKnob(String name, Object v, long min) throws UsageError {
            if (v instanceof Long && (Long) v >= min) {
                return (Long) v;
            }
            throw new UsageError(name + ": expected an integer >= " + min + ", got " + v);
        }

        static boolean boolKnob(String name, Object v) throws UsageError {
            if (v instanceof Boolean) {
                return (Boolean) v;
            }
            throw new UsageError(name + ": expected true or false, got " + v);
        }

        static String string(Object v, String where) throws UsageError {
            if (v instanceof String) {
                return (String) v;
            }
            throw new UsageError(where + ": expected a string, got " + v);
        }

        @SuppressWarnings("unchecked")
        static Map<String, Object> asMap(Object v, String where) throws UsageError {
            if (v instanceof Map) {
                return (Map<String, Object>) v;
            }
            throw new UsageError(where + ": expected a JSON object");
        }

        static Object flagValue(String v) {
            if (v.equals("true") || v.equals("false")) {
                return Boolean.valueOf(v);
            }
            try {
                return Long.valueOf(v);
            } catch (NumberFormatException e) {
                return v;
            }
        }
    }

    /** A small JSON reader (objects, arrays, strings, numbers, true/false/null) and string quoting. */
    static final class Json {
        private final String s;
        private int pos;

        private Json(String s) {
            this.s = s;
        }

        static Object parse(String text) throws UsageError {
            Json p = new Json(text);
            Object v = p.value();
            p.ws();
            if (p.pos != p.s.length()) {
                throw p.error("trailing characters");
            }
            return v;
        }

        static String quote(String v) {
            StringBuilder sb = new StringBuilder("\"");
            for (char c : v.toCharArray()) {
                switch (c) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                }
            }
            return sb.append('"').toString();
        }

        private UsageError error(String what) {
            return new UsageError("plan is not valid JSON: " + what + " at offset " + pos);
        }

        private void ws() {
            while (pos < s.length() && Character.isWhitespace(s.charAt(pos))) {
                pos++;
            }
        }

        private Object value() throws UsageError {
            ws();
            if (pos >= s.length()) {
                throw error("unexpected end");
            }
            char c = s.charAt(pos);
            if (c == '{') {
                return object();
            }
            if (c == '[') {
                return array();
            }
            if (c == '"') {
                return string();
            }
            if (s.startsWith("true", pos)) {
                pos += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", pos)) {
                pos += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", pos)) {
                pos += 4;
                return null;
            }
            return number();
        }

        private Map<String, Object> object() throws UsageError {
            Map<String, Object> m = new LinkedHashMap<>();
            pos++;
            ws();
            if (pos < s.length() && s.charAt(pos) == '}') {
                pos++;
                return m;
            }
            while (true) {
                ws();
                if (pos >= s.length() || s.charAt(pos) != '"') {
                    throw error("expected a key");
                }
                String key = string();
                ws();
                if (pos >= s.length() || s.charAt(pos) != ':') {
                    throw error("expected ':'");
                }
                pos++;
                m.put(key, value());
                ws();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else if (pos < s.length() && s.charAt(pos) == '}') {
                    pos++;
                    return m;
                } else {
                    throw error("expected ',' or '}'");
                }
            }
        }

        private List<Object> array() throws UsageError {
            List<Object> l = new ArrayList<>();
            pos++;
            ws();
            if (pos < s.length() && s.charAt(pos) == ']') {
                pos++;
                return l;
            }
            while (true) {
                l.add(value());
                ws();
                if (pos < s.length() && s.charAt(pos) == ',') {
                    pos++;
                } else if (pos < s.length() && s.charAt(pos) == ']') {
                    pos++;
                    return l;
                } else {
                    throw error("expected ',' or ']'");
                }
            }
        }

        private String string() throws UsageError {
            StringBuilder sb = new StringBuilder();
            pos++; // opening quote
            while (pos < s.length()) {
                char c = s.charAt(pos++);
                if (c == '"') {
                    return sb.toString();
                }
                if (c != '\\') {
                    sb.append(c);
                    continue;
                }
                if (pos >= s.length()) {
                    break;
                }
                char e = s.charAt(pos++);
                switch (e) {
                    case 'n': sb.append('\n'); break;
                    case 't': sb.append('\t'); break;
                    case 'r': sb.append('\r'); break;
                    case 'b': sb.append('\b'); break;
                    case 'f': sb.append('\f'); break;
                    case 'u':
                        if (pos + 4 > s.length()) {
                            throw error("bad \\u escape");
                        }
                        try {
                            sb.append((char) Integer.parseInt(s.substring(pos, pos + 4), 16));
                        } catch (NumberFormatException ex) {
                            throw error("bad \\u escape");
                        }
                        pos += 4;
                        break;
                    default: sb.append(e); // \" \\ \/
                }
            }
            throw error("unterminated string");
        }

        private Object number() throws UsageError {
            int start = pos;
            while (pos < s.length() && "+-0123456789.eE".indexOf(s.charAt(pos)) >= 0) {
                pos++;
            }
            String t = s.substring(start, pos);
            if (t.isEmpty()) {
                throw error("unexpected character '" + s.charAt(pos) + "'");
            }
            try {
                if (t.matches("-?\\d+")) {
                    return Long.valueOf(t);
                }
                return Double.valueOf(t);
            } catch (NumberFormatException ex) {
                throw error("bad number " + t);
            }
        }
    }
}
