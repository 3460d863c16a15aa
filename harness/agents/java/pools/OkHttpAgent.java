/*
 * The connformance http-client agent for OkHttp 5 (SPEC.md §4.4).
 *
 *   java -cp "CLASSES:LIB/*" OkHttpAgent --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]
 *
 * A thin adapter over one OkHttpClient; the pool under test is OkHttp's own ConnectionPool. Calls
 * are synchronous (Call.execute() on the plan's threads, as in a blocking application): OkHttp
 * limits no connections then. OkHttp's only per-host limit is its Dispatcher's, which holds for
 * enqueued calls only, so when the plan sets max_conns_per_host every call is enqueued
 * (Call.enqueue) and its response read inside onResponse, as an application does (reading it
 * after the callback returned would free the Dispatcher's slot while the connection is still in
 * use: maxRequestsPerHost limits calls, not connections). Knobs, from the plan's "knobs" or flags
 * (flags win):
 *
 *   max_conns_per_host -> enqueued calls, Dispatcher.maxRequestsPerHost (OkHttp's default 5; 0 =
 *                         no limit: both it and maxRequests set to Integer.MAX_VALUE)
 *   max_idle_total     -> ConnectionPool maxIdleConnections (pool-wide; default 5)
 *   idle_timeout_ms    -> ConnectionPool keepAliveDuration (default 5 min)
 *   block_when_full    -> true only: calls over the limit wait in the Dispatcher's ready queue
 *   read_error_body    -> read (true, default) or leave unread and unclosed (false) the body of a
 *                         >= 400 response; unclosed, the connection is never returned to the pool
 *   max_idle_per_host, keepalive -> unsupported (no such setting: the idle cap is pool-wide, and
 *                         keep-alive can only be turned off by the application's own header)
 *
 * Everything else keeps OkHttp's defaults, retryOnConnectionFailure (true) among them. Records carry
 * "reused" (no connectStart before the call's last connectionAcquired) and "local_port" (the
 * acquired connection's socket), from an EventListener. cancel_burst cancels the call
 * (Call.cancel) after cancel_after_ms. A phase's "timeout_ms" is the call timeout; absent, OkHttp's defaults hold
 * (no call timeout; connect, read and write 10 s each).
 *
 * The plan/JSON/output kit lives in ../HttpUrlConnectionAgent.java (class Agent); `connformance
 * setup` (step java-pool-agents) compiles it with this file against OkHttp from Maven Central.
 */

import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.Map;
import java.util.Queue;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import okhttp3.Call;
import okhttp3.Callback;
import okhttp3.Connection;
import okhttp3.ConnectionPool;
import okhttp3.Dispatcher;
import okhttp3.EventListener;
import okhttp3.MediaType;
import okhttp3.OkHttpClient;
import okhttp3.Request;
import okhttp3.RequestBody;
import okhttp3.Response;
import okhttp3.ResponseBody;

public final class OkHttpAgent {

    public static void main(String[] args) {
        HttpUrlConnectionAgent.Agent.run("OkHttpAgent", args, new OkHttpStack());
    }

    /** What the EventListener saw of one call; found through the request's tag. */
    static final class Trace {
        volatile boolean connected;
        volatile Integer localPort;
        volatile Boolean reused;
    }

    static final class Tracer extends EventListener {
        private final Trace trace;

        Tracer(Trace trace) {
            this.trace = trace;
        }

        @Override
        public void connectStart(Call call, InetSocketAddress address, java.net.Proxy proxy) {
            trace.connected = true;
        }

        @Override
        public void connectionAcquired(Call call, Connection connection) {
            trace.localPort = connection.socket().getLocalPort();
            trace.reused = !trace.connected;
            trace.connected = false; // a retry on another connection starts over
        }
    }

    static final class OkHttpStack implements HttpUrlConnectionAgent.Stack {
        private static final EventListener SILENT = new EventListener() { };
        private boolean readErrorBody = true;
        private boolean enqueue; // max_conns_per_host given: calls go through the Dispatcher
        private OkHttpClient client;
        // Unclosed error bodies stay reachable so their connections stay held (as in an app that forgot them).
        private final Queue<ResponseBody> unread = new ConcurrentLinkedQueue<>();

        @Override
        public Map<String, String> configure(Map<String, Object> knobs) throws HttpUrlConnectionAgent.UsageError {
            Map<String, String> unsupported = new TreeMap<>();
            Dispatcher dispatcher = new Dispatcher();
            int maxIdle = 5;                // OkHttp's ConnectionPool() defaults
            long keepAliveMs = TimeUnit.MINUTES.toMillis(5);
            for (Map.Entry<String, Object> e : knobs.entrySet()) {
                String name = e.getKey();
                Object value = e.getValue();
                switch (name) {
                    case "max_conns_per_host": {
                        long n = HttpUrlConnectionAgent.Agent.intKnob(name, value, 0);
                        enqueue = true;
                        if (n == 0) {
                            dispatcher.setMaxRequests(Integer.MAX_VALUE);
                            dispatcher.setMaxRequestsPerHost(Integer.MAX_VALUE);
                        } else {
                            dispatcher.setMaxRequestsPerHost((int) n);
                        }
                        break;
                    }
                    case "max_idle_total":
                        maxIdle = (int) HttpUrlConnectionAgent.Agent.intKnob(name, value, 0);
                        break;
                    case "idle_timeout_ms":
                        keepAliveMs = HttpUrlConnectionAgent.Agent.intKnob(name, value, 1);
                        break;
                    case "read_error_body":
                        readErrorBody = HttpUrlConnectionAgent.Agent.boolKnob(name, value);
                        break;
                    case "block_when_full":
                        if (!HttpUrlConnectionAgent.Agent.boolKnob(name, value)) {
                            unsupported.put(name, "OkHttp's Dispatcher always queues calls over maxRequestsPerHost; it cannot open extra connections");
                        }
                        break;
                    case "max_idle_per_host":
                        unsupported.put(name, "OkHttp's ConnectionPool caps idle connections pool-wide only (maxIdleConnections)");
                        break;
                    case "keepalive":
                        if (!HttpUrlConnectionAgent.Agent.boolKnob(name, value)) {
                            unsupported.put(name, "OkHttp has no setting to turn keep-alive off (only the application's own Connection: close header)");
                        }
                        break;
                    default:
                        unsupported.put(name, "not a knob of the agent contract");
                }
            }
            if (unsupported.isEmpty()) {
                client = new OkHttpClient.Builder()
                        .dispatcher(dispatcher)
                        .connectionPool(new ConnectionPool(maxIdle, keepAliveMs, TimeUnit.MILLISECONDS))
                        .followRedirects(false)
                        .eventListenerFactory(call -> {
                            Trace t = call.request().tag(Trace.class);
                            return t == null ? SILENT : new Tracer(t);
                        })
                        .build();
            }
            return unsupported;
        }

        @Override
        public void send(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r) throws Exception {
            exchange(url, ph, r, -1);
        }

        @Override
        public void sendCancelAfter(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r,
                                    int cancelAfterMs) throws Exception {
            exchange(url, ph, r, cancelAfterMs);
        }

        /** One call, synchronous or enqueued; cancelAfterMs >= 0: Call.cancel() after that long. */
        private void exchange(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r,
                              int cancelAfterMs) throws Exception {
            Trace trace = new Trace();
            Call call = client.newCall(request(url, ph, trace));
            if (ph.timeoutMs > 0) {
                call.timeout().timeout(ph.timeoutMs, TimeUnit.MILLISECONDS); // absent: no call timeout
            }
            ScheduledFuture<?> canceller = cancelAfterMs >= 0 && !enqueue
                    ? HttpUrlConnectionAgent.Agent.CANCELLER.schedule(call::cancel, cancelAfterMs, TimeUnit.MILLISECONDS) : null;
            try {
                r.status = enqueue ? enqueueAndAwait(call, cancelAfterMs) : consume(call.execute());
            } catch (TimeoutException e) {
                call.cancel(); // an enqueued call still waiting for its response (or for a Dispatcher slot)
                r.error = "canceled: after " + cancelAfterMs + " ms";
            } catch (IOException e) {
                if (cancelAfterMs < 0 || !call.isCanceled()) {
                    throw e;
                }
                r.error = "canceled: after " + cancelAfterMs + " ms (" + e + ")";
            } finally {
                if (canceller != null) {
                    canceller.cancel(false);
                }
                r.reused = trace.reused;
                r.localPort = trace.localPort;
            }
        }

        private static Request request(String url, HttpUrlConnectionAgent.Phase ph, Trace trace) {
            RequestBody body = ph.body == null
                    ? (ph.method.equals("GET") || ph.method.equals("HEAD") ? null : RequestBody.create(new byte[0], null))
                    : RequestBody.create(ph.body, MediaType.get("text/plain; charset=utf-8"));
            return new Request.Builder().url(url).method(ph.method, body).tag(Trace.class, trace).build();
        }

        /** Enqueue; the response is read inside onResponse, as an application does, so the Dispatcher's
         * slot is held for as long as the connection is. timeoutMs < 0: wait as long as it takes. */
        private int enqueueAndAwait(Call call, long timeoutMs) throws Exception {
            CompletableFuture<Integer> status = new CompletableFuture<>();
            call.enqueue(new Callback() {
                @Override
                public void onFailure(Call c, IOException e) {
                    status.completeExceptionally(e);
                }

                @Override
                public void onResponse(Call c, Response response) {
                    try {
                        status.complete(consume(response));
                    } catch (IOException e) {
                        status.completeExceptionally(e);
                    }
                }
            });
            try {
                return timeoutMs >= 0 ? status.get(timeoutMs, TimeUnit.MILLISECONDS) : status.get();
            } catch (ExecutionException e) {
                Throwable cause = e.getCause();
                throw cause instanceof Exception ? (Exception) cause : e;
            }
        }

        /** Read the body to EOF and close it (the connection returns to the pool), or leave it. */
        private int consume(Response resp) throws IOException {
            int code = resp.code();
            if (code < 400 || readErrorBody) {
                try (Response closing = resp) {
                    closing.body().bytes();
                }
            } else {
                unread.add(resp.body());
            }
            return code;
        }
    }
}
