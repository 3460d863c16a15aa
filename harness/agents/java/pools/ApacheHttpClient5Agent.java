/*
 * The connformance http-client agent for Apache HttpClient 5, classic API (SPEC.md §4.4).
 *
 *   java -cp "CLASSES:LIB/*" ApacheHttpClient5Agent --url URL [--url URL2] --plan PLAN.json [--knob-name value ...]
 *
 * A thin adapter over one CloseableHttpClient with a PoolingHttpClientConnectionManager; the pool
 * under test is HttpClient's own. Knobs, from the plan's "knobs" or flags (flags win):
 *
 *   max_conns_per_host -> setDefaultMaxPerRoute (default 5; 0 = no limit: per route and in total
 *                         Integer.MAX_VALUE); the pool-wide setMaxTotal keeps its default 25
 *   idle_timeout_ms    -> HttpClientBuilder.evictIdleConnections(T): a background evictor that
 *                         wakes every T and closes connections idle longer than T (so between T
 *                         and 2T). Without it an idle connection expires after the server's
 *                         Keep-Alive timeout or RequestConfig.connectionKeepAlive (3 min), and is
 *                         closed only when the pool is next used
 *   keepalive          -> false: a ConnectionReuseStrategy that never reuses (the client closes each
 *                         connection after its response)
 *   block_when_full    -> true only: a request over the limit waits for a lease (connectionRequestTimeout,
 *                         3 min by default)
 *   read_error_body    -> read (true, default) or leave unread and unclosed (false) the body of a
 *                         >= 400 response; unclosed, the connection stays leased
 *   max_idle_per_host, max_idle_total -> unsupported: the pool keeps every released connection
 *                         (up to the connection limits); it has no separate idle cap
 *
 * Everything else keeps HttpClient's defaults: the stale check of a connection idle for 2 s before
 * it is leased (ConnectionConfig.validateAfterInactivity null -> 2 s), DefaultHttpRequestRetryStrategy
 * (1 retry of idempotent requests on a NoHttpResponseException and some I/O errors). Records carry
 * "reused" (EndpointDetails.getRequestCount() > 1) and "local_port" (EndpointDetails.getLocalAddress()).
 * cancel_burst cancels the request (HttpUriRequestBase.cancel) after cancel_after_ms. A phase's
 * "timeout_ms" is the connect, response and lease timeout; absent, HttpClient's defaults hold.
 *
 * The plan/JSON/output kit lives in ../HttpUrlConnectionAgent.java (class Agent); `connformance
 * setup` (step java-pool-agents) compiles it with this file against HttpClient from Maven Central.
 */

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Queue;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.hc.client5.http.classic.methods.HttpUriRequestBase;
import org.apache.hc.client5.http.config.RequestConfig;
import org.apache.hc.client5.http.impl.classic.CloseableHttpClient;
import org.apache.hc.client5.http.impl.classic.HttpClientBuilder;
import org.apache.hc.client5.http.impl.classic.HttpClients;
import org.apache.hc.client5.http.impl.io.PoolingHttpClientConnectionManager;
import org.apache.hc.client5.http.impl.io.PoolingHttpClientConnectionManagerBuilder;
import org.apache.hc.client5.http.protocol.HttpClientContext;
import org.apache.hc.core5.http.ClassicHttpResponse;
import org.apache.hc.core5.http.ContentType;
import org.apache.hc.core5.http.EndpointDetails;
import org.apache.hc.core5.http.io.entity.EntityUtils;
import org.apache.hc.core5.http.io.entity.StringEntity;
import org.apache.hc.core5.util.TimeValue;
import org.apache.hc.core5.util.Timeout;

public final class ApacheHttpClient5Agent {

    public static void main(String[] args) {
        HttpUrlConnectionAgent.Agent.run("ApacheHttpClient5Agent", args, new ClassicStack());
    }

    static final class ClassicStack implements HttpUrlConnectionAgent.Stack {
        private boolean readErrorBody = true;
        private CloseableHttpClient client;
        // Unclosed error responses stay reachable so their connections stay leased (as in an app that forgot them).
        private final Queue<ClassicHttpResponse> unread = new ConcurrentLinkedQueue<>();

        @Override
        public Map<String, String> configure(Map<String, Object> knobs) throws HttpUrlConnectionAgent.UsageError {
            Map<String, String> unsupported = new TreeMap<>();
            PoolingHttpClientConnectionManagerBuilder pool = PoolingHttpClientConnectionManagerBuilder.create();
            HttpClientBuilder builder = HttpClients.custom().disableRedirectHandling();
            for (Map.Entry<String, Object> e : knobs.entrySet()) {
                String name = e.getKey();
                Object value = e.getValue();
                switch (name) {
                    case "max_conns_per_host": {
                        long n = HttpUrlConnectionAgent.Agent.intKnob(name, value, 0);
                        if (n == 0) {
                            pool.setMaxConnPerRoute(Integer.MAX_VALUE).setMaxConnTotal(Integer.MAX_VALUE);
                        } else {
                            pool.setMaxConnPerRoute((int) n);
                        }
                        break;
                    }
                    case "idle_timeout_ms":
                        builder.evictIdleConnections(TimeValue.ofMilliseconds(HttpUrlConnectionAgent.Agent.intKnob(name, value, 1)));
                        break;
                    case "keepalive":
                        if (!HttpUrlConnectionAgent.Agent.boolKnob(name, value)) {
                            builder.setConnectionReuseStrategy((request, response, context) -> false);
                        }
                        break;
                    case "read_error_body":
                        readErrorBody = HttpUrlConnectionAgent.Agent.boolKnob(name, value);
                        break;
                    case "block_when_full":
                        if (!HttpUrlConnectionAgent.Agent.boolKnob(name, value)) {
                            unsupported.put(name, "HttpClient's pool always waits for a lease at its limit; it cannot open extra connections");
                        }
                        break;
                    case "max_idle_per_host":
                    case "max_idle_total":
                        unsupported.put(name, "HttpClient's pool keeps every released connection up to its connection limits; it has no separate idle cap");
                        break;
                    default:
                        unsupported.put(name, "not a knob of the agent contract");
                }
            }
            if (unsupported.isEmpty()) {
                PoolingHttpClientConnectionManager manager = pool.build();
                client = builder.setConnectionManager(manager).build();
            }
            return unsupported;
        }

        @Override
        public void send(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r) throws Exception {
            execute(request(url, ph), r);
        }

        @Override
        public void sendCancelAfter(String url, HttpUrlConnectionAgent.Phase ph, HttpUrlConnectionAgent.Result r,
                                    int cancelAfterMs) throws Exception {
            HttpUriRequestBase request = request(url, ph);
            AtomicBoolean canceled = new AtomicBoolean();
            ScheduledFuture<?> timer = HttpUrlConnectionAgent.Agent.CANCELLER.schedule(() -> {
                canceled.set(true);
                request.cancel();
            }, cancelAfterMs, TimeUnit.MILLISECONDS);
            try {
                execute(request, r);
            } catch (Exception e) {
                if (!canceled.get()) {
                    throw e;
                }
                r.error = "canceled: after " + cancelAfterMs + " ms";
            } finally {
                timer.cancel(false);
            }
        }

        @SuppressWarnings("deprecation") // RequestConfig's connect timeout: the only per-request one (5.2+ prefers ConnectionConfig, per pool)
        private static HttpUriRequestBase request(String url, HttpUrlConnectionAgent.Phase ph) {
            HttpUriRequestBase request = new HttpUriRequestBase(ph.method, java.net.URI.create(url));
            if (ph.body != null) {
                request.setEntity(new StringEntity(ph.body, ContentType.TEXT_PLAIN.withCharset(StandardCharsets.UTF_8)));
            }
            if (ph.timeoutMs > 0) { // absent: HttpClient's defaults
                Timeout t = Timeout.ofMilliseconds(ph.timeoutMs);
                request.setConfig(RequestConfig.custom().setResponseTimeout(t).setConnectionRequestTimeout(t)
                        .setConnectTimeout(t).build());
            }
            return request;
        }

        private void execute(HttpUriRequestBase request, HttpUrlConnectionAgent.Result r) throws Exception {
            HttpClientContext context = HttpClientContext.create();
            ClassicHttpResponse resp;
            try {
                resp = client.executeOpen(null, request, context);
            } finally {
                EndpointDetails details = context.getEndpointDetails();
                if (details != null) {
                    r.reused = details.getRequestCount() > 1;
                    SocketAddress local = details.getLocalAddress();
                    if (local instanceof InetSocketAddress) {
                        r.localPort = ((InetSocketAddress) local).getPort();
                    }
                }
            }
            r.status = resp.getCode();
            if (resp.getCode() < 400 || readErrorBody) {
                try (ClassicHttpResponse closing = resp) {
                    EntityUtils.consume(closing.getEntity()); // to EOF: the connection returns to the pool
                }
            } else {
                unread.add(resp);
            }
        }
    }
}
