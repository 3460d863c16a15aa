/*
 * Embedded Apache Tomcat 10.1 as a connformance http-server peer (SPEC.md §3): the real
 * Http11NioProtocol connector, with a servlet answering the ledger's paths.
 *
 *   java -cp CLASSES:tomcat-embed-core.jar TomcatLauncher --host H --port P
 *        [--max-connections N] [--keep-alive-timeout-ms MS] [--max-keep-alive-requests N]
 *        [--accept-count N] [--connection-timeout-ms MS]
 *
 * Paths: /sleep?ms=N (answer after N ms), /status/<code> (answer with that status; Tomcat itself
 * adds Connection: close and closes after 400, 408, 411, 413, 414, 500, 501, 503), /bytes?n=N
 * (N bytes with a Content-Length), / (200). Anything else: 404. Responses are text/plain with a
 * Content-Length, written in one call.
 *
 * Flags map one to one onto Connector attributes (maxConnections, keepAliveTimeout,
 * maxKeepAliveRequests, acceptCount, connectionTimeout); unset ones keep Tomcat's code defaults
 * (8192, = connectionTimeout, 100, 100, 60000 ms): embedded Tomcat has no server.xml (whose
 * stock connectionTimeout is 20000). There is no ledger: observe Tomcat through the socket table.
 *
 * Prints "TomcatLauncher: listening on http://H:P" once the connector is started. SIGTERM stops
 * Tomcat (closing its connections) and removes its temporary base directory.
 */

import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.catalina.Lifecycle;
import org.apache.catalina.connector.Connector;
import org.apache.catalina.core.StandardContext;
import org.apache.catalina.startup.Tomcat;

public final class TomcatLauncher {
    private static final int MAX_BYTES = 64 * 1024 * 1024;
    private static final int MAX_SLEEP_MS = 600_000;

    /** Flag -> Connector attribute. */
    private static final Map<String, String> ATTRIBUTES = new LinkedHashMap<>();

    static {
        ATTRIBUTES.put("--max-connections", "maxConnections");
        ATTRIBUTES.put("--keep-alive-timeout-ms", "keepAliveTimeout");
        ATTRIBUTES.put("--max-keep-alive-requests", "maxKeepAliveRequests");
        ATTRIBUTES.put("--accept-count", "acceptCount");
        ATTRIBUTES.put("--connection-timeout-ms", "connectionTimeout");
    }

    @SuppressWarnings("deprecation") // addServletMappingDecoded(String, String), see there
    public static void main(String[] args) throws Exception {
        String host = "127.0.0.1";
        Integer port = null;
        Map<String, String> attributes = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                usage("flag " + args[i] + " needs a value");
            }
            String flag = args[i];
            String value = args[i + 1];
            if (flag.equals("--host")) {
                host = value;
            } else if (flag.equals("--port")) {
                port = parseInt(flag, value, 1);
            } else if (ATTRIBUTES.containsKey(flag)) {
                parseInt(flag, value, -1);
                attributes.put(ATTRIBUTES.get(flag), value);
            } else {
                usage("unknown flag " + flag);
            }
        }
        if (port == null) {
            usage("--port is required");
        }
        if (!host.startsWith("127.") && !host.equals("localhost")) {
            usage("--host " + host + " is outside 127.0.0.0/8; connformance binds loopback only");
        }

        Path base = Files.createTempDirectory("connformance-tomcat-");
        Tomcat tomcat = new Tomcat();
        tomcat.setBaseDir(base.toString());
        Connector connector = new Connector("HTTP/1.1"); // Http11NioProtocol
        connector.setPort(port);
        if (!connector.setProperty("address", host)) {
            usage("Tomcat rejected address=" + host);
        }
        for (Map.Entry<String, String> e : attributes.entrySet()) {
            if (!connector.setProperty(e.getKey(), e.getValue())) {
                usage("Tomcat rejected " + e.getKey() + "=" + e.getValue());
            }
        }
        tomcat.getService().addConnector(connector);
        tomcat.setConnector(connector);

        // Tomcat.addContext() would scan for annotations, which needs jakarta.annotation: not in
        // Debian's tomcat10-embed-core.jar. A context with nothing to configure needs no scan.
        StandardContext ctx = new StandardContext();
        ctx.setName("");
        ctx.setPath("");
        ctx.setDocBase(base.toString());
        ctx.addLifecycleListener(event -> {
            if (Lifecycle.CONFIGURE_START_EVENT.equals(event.getType())) {
                ctx.setConfigured(true);
            }
        });
        tomcat.getHost().addChild(ctx);
        Tomcat.addServlet(ctx, "connformance", new LedgerPaths());
        ctx.addServletMappingDecoded("/", "connformance"); // deprecated in 10.1 only: Tomcat 11 keeps this form

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                tomcat.stop();
                tomcat.destroy();
            } catch (Exception e) {
                System.err.println("TomcatLauncher: stop failed: " + e);
            }
            deleteTree(base);
        }, "connformance-tomcat-stop"));

        tomcat.start();
        if (!connector.getState().isAvailable()) {
            System.err.println("TomcatLauncher: the connector did not start on " + host + ":" + port
                    + " (state " + connector.getState() + "); is the port free?");
            System.exit(1);
        }
        System.out.println("TomcatLauncher: listening on http://" + host + ":" + port + " " + attributes);
        System.out.flush();
        tomcat.getServer().await();
    }

    private static int parseInt(String flag, String value, int min) {
        try {
            int n = Integer.parseInt(value);
            if (n >= min) {
                return n;
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        usage(flag + " needs an integer >= " + min + ", got " + value);
        return 0;
    }

    private static void usage(String problem) {
        System.err.println("TomcatLauncher: " + problem);
        StringBuilder usage = new StringBuilder("usage: TomcatLauncher --host H --port P");
        for (String flag : ATTRIBUTES.keySet()) {
            usage.append(" [").append(flag).append(" N]");
        }
        System.err.println(usage);
        System.exit(2);
    }

    private static void deleteTree(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            // best effort: a temp dir
        }
    }

    /** The ledger's paths (SPEC §4.5) minus /drop-nth and the admin API. */
    static final class LedgerPaths extends HttpServlet {
        private static final long serialVersionUID = 1L;

        @Override
        protected void service(HttpServletRequest req, HttpServletResponse resp) throws IOException {
            try (InputStream in = req.getInputStream()) {
                in.transferTo(OutputStream.nullOutputStream()); // read the body: no RST on close
            }
            String path = req.getRequestURI();
            int status = 200;
            byte[] body = "ok\n".getBytes(StandardCharsets.US_ASCII);
            if (path.equals("/sleep")) {
                int ms = query(req, "ms", 0, MAX_SLEEP_MS);
                if (ms < 0) {
                    status = 400;
                    body = "ms must be 0..600000\n".getBytes(StandardCharsets.US_ASCII);
                } else {
                    try {
                        Thread.sleep(ms);
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
            } else if (path.startsWith("/status/")) {
                try {
                    status = Integer.parseInt(path.substring("/status/".length()));
                } catch (NumberFormatException e) {
                    status = -1;
                }
                if (status < 200 || status > 599) {
                    status = 400;
                    body = "status must be 200..599\n".getBytes(StandardCharsets.US_ASCII);
                } else {
                    body = ("status " + status + "\n").getBytes(StandardCharsets.US_ASCII);
                }
            } else if (path.equals("/bytes")) {
                int n = query(req, "n", 0, MAX_BYTES);
                if (n < 0) {
                    status = 400;
                    body = "n must be 0..67108864\n".getBytes(StandardCharsets.US_ASCII);
                } else {
                    body = new byte[n];
                    Arrays.fill(body, (byte) 'x');
                }
            } else if (!path.equals("/")) {
                status = 404;
                body = "not found\n".getBytes(StandardCharsets.US_ASCII);
            }
            resp.setStatus(status);
            if (status == 204 || status == 304) {
                return; // no body allowed
            }
            resp.setContentType("text/plain");
            resp.setContentLength(body.length);
            try (OutputStream out = resp.getOutputStream()) {
                out.write(body);
            }
        }

        /** The integer query parameter, or -1 when absent/invalid/out of range. */
        private static int query(HttpServletRequest req, String name, int min, int max) {
            String v = req.getParameter(name);
            if (v == null) {
                return -1;
            }
            try {
                int n = Integer.parseInt(v);
                return n >= min && n <= max ? n : -1;
            } catch (NumberFormatException e) {
                return -1;
            }
        }
    }
}
