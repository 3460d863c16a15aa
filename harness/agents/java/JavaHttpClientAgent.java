/*
 * The connformance http-client agent for the JDK's java.net.http.HttpClient (SPEC.md §4.4),
 * HTTP/1.1 forced (a plain http:// request would otherwise try an h2c upgrade).
 *
 *   java [-Djdk.httpclient.connectionPoolSize=N ...] -cp CLASSES JavaHttpClientAgent
 *        --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]
 *
 * A thin adapter over one HttpClient; the pool under test is the JDK's own
 * (jdk.internal.net.http.ConnectionPool). Knobs, from the plan's "knobs" or flags (flags win):
 *
 *   max_idle_total   -> jdk.httpclient.connectionPoolSize (a pool-wide cap on idle conns; the
 *                       JDK's 0 means unbounded, so 0 is unsupported)
 *   idle_timeout_ms  -> jdk.httpclient.keepalive.timeout, whole seconds (JDK 17 default 1200 s)
 *   read_error_body  -> read (true, default) or leave unread (false) the body of a >= 400
 *                       response; unread, the connection is never returned to the pool
 *   block_when_full  -> false only: HTTP/1.1 has no per-host limit to wait at
 *   max_conns_per_host, max_idle_per_host, keepalive -> unsupported (no such setting; keep-alive
 *                       can only be turned off by the application sending Connection: close)
 *
 * Both properties are read once, when the JDK's classes initialise: they are set before the
 * client is built. The same properties given with -D are honoured; a contradiction is an error.
 *
 * Records have "reused": null and "local_port": null (no public API for either). cancel_burst
 * cancels the future of sendAsync after cancel_after_ms (the JDK cancels the exchange, JDK 16+;
 * the record's error is "canceled: ..."). A phase's "timeout_ms" is the request timeout; absent,
 * there is none (the JDK's default).
 *
 * The plan/JSON/output kit lives in HttpUrlConnectionAgent.java (class HttpUrlConnectionAgent.Agent);
 * `connformance setup` (step java-http-agents) compiles both files together.
 */

import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.TreeMap;

public final class JavaHttpClientAgent {

    public static void main(String[] args) {
        HttpUrlConnectionAgent.Agent.run("JavaHttpClientAgent", args, new HttpClientStack());
    }

    static final class HttpClientStack implements HttpUrlConnectionAgent.Stack {
        private boolean readErrorBody = true;
        private HttpClient client;
        // Unread error bodies are kept reachable so the connection stays held, as in an app that
        // forgot them (a collected stream would not release it either, but keep it deterministic).
        private final Queue<InputStream> unread = new ConcurrentLinkedQueue<>();

        @Override
        public Map<String, String> configure(Map<String, Object> knobs) throws HttpUrlConnectionAgent.UsageError {
            Map<String, String> unsupported = new TreeMap<>();
            for (Map.Entry<String, Object> e : knobs.entrySet()) {
                String name = e.getKey();
                Object value = e.getValue();
                switch (name) {
                    case "max_idle_total": {
                        long n = HttpUrlConnectionAgent.Agent.intKnob(name, value, 0);
                        if (n == 0) {
                            unsupported.put(name, "jdk.httpclient.connectionPoolSize=0 means unbounded to the JDK; it cannot keep none");
                        } else {
                            HttpUrlConnectionAgent.Agent.setProperty(name, "jdk.httpclient.connectionPoolSize", Long.toString(n));
                        }
                        break;
                    }
                    case "idle_timeout_ms": {
                        long ms = HttpUrlConnectionAgent.Agent.intKnob(name, value, 0);
                        if (ms == 0 || ms % 1000 != 0) {
                            unsupported.put(name, "jdk.httpclient.keepalive.timeout takes whole seconds > 0, not " + ms + " ms");
                        } else {
                            HttpUrlConnectionAgent.Agent.setProperty(name, "jdk.httpclient.keepalive.timeout", Long.toString(ms / 1000));
                        }
                        break;
                    }
                    case "read_error_body":
                        readErrorBody = HttpUrlConnectionAgent.Agent.boolKnob(name, value);
                        break;
                    case "block_when_full":
                        if (HttpUrlConnectionAgent.Agent.boolKnob(name, value)) {
                            unsupported.put(name, "java.net.http has no HTTP/1.1 connection limit to wait at");
                        }
                        break;
                    default: // max_conns_per_host, max_idle_per_host, keepalive, unknown
                        unsupported.put(name, HttpUrlConnectionAgent.Agent.isKnob(name)
                                ? "java.net.http has no such setting (pool settings: the pool-wide idle cap and the keep-alive timeout)"
                                : "not a knob of the agent contract");
                }
            }
            String poolSize = System.getProperty("jdk.httpclient.connectionPoolSize");
            if (poolSize != null && !knobs.containsKey("max_idle_total") && poolSize.trim().equals("0")) {
                unsupported.put("max_idle_total", "-Djdk.httpclient.connectionPoolSize=0 means unbounded to the JDK");
            }
            if (unsupported.isEmpty()) {
                client = HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .followRedirects(HttpClient.Redirect.NEVER)
                        .build();
            }
            return unsupported;
        }

        @Override
        public void send(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r) throws Exception {
            await(start(url, ph), -1, r);
        }

        @Override
        public void sendCancelAfter(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r,
                                    int cancelAfterMs) throws Exception {
            CompletableFuture<HttpResponse<InputStream>> f = start(url, ph);
            try {
                await(f, cancelAfterMs, r);
            } catch (TimeoutException e) {
                f.cancel(true);
                r.error = "canceled: after " + cancelAfterMs + " ms";
            }
        }

        private CompletableFuture<HttpResponse<InputStream>> start(String url, HttpUrlConnectionAgent.Phase ph) {
            HttpRequest.BodyPublisher body = ph.body == null
                    ? HttpRequest.BodyPublishers.noBody()
                    : HttpRequest.BodyPublishers.ofString(ph.body);
            HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(url)).method(ph.method, body);
            if (ph.timeoutMs > 0) {
                req.timeout(Duration.ofMillis(ph.timeoutMs)); // absent: no timeout, the JDK's default
            }
            return client.sendAsync(req.build(), HttpResponse.BodyHandlers.ofInputStream());
        }

        /** Wait for the response (timeoutMs < 0: as long as it takes), then read or leave its body. */
        private void await(CompletableFuture<HttpResponse<InputStream>> f, long timeoutMs, HttpUrlConnectionAgent.Result r)
                throws Exception {
            HttpResponse<InputStream> resp;
            try {
                resp = timeoutMs >= 0 ? f.get(timeoutMs, TimeUnit.MILLISECONDS) : f.get();
            } catch (ExecutionException e) {
                Throwable cause = e.getCause();
                throw cause instanceof Exception ? (Exception) cause : e;
            }
            r.status = resp.statusCode();
            if (resp.statusCode() < 400 || readErrorBody) {
                try (InputStream in = resp.body()) {
                    in.transferTo(java.io.OutputStream.nullOutputStream()); // EOF returns the conn to the pool
                }
            } else {
                unread.add(resp.body());
            }
        }
    }
}
