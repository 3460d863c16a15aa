/*
 * Embedded Eclipse Jetty 12 (core API, no servlets) as a connformance http-server peer: the real
 * ServerConnector and HttpConnection, with a Handler answering the ledger's paths.
 *
 *   java -cp "CLASSES:LIB/*" JettyLauncher --host H --port P [--idle-timeout-ms MS] [--max-connections N]
 *
 * Paths: /sleep?ms=N (answer after N ms), /status/<code> (answer with that status), /bytes?n=N
 * (N bytes with a Content-Length), / (200). Anything else: 404. Responses are text/plain with a
 * Content-Length.
 *
 * Flags (unset ones keep Jetty's defaults):
 *   --idle-timeout-ms              ServerConnector.setIdleTimeout (default 30000): an idle
 *                                  keep-alive connection is closed after it
 *   --max-connections              a NetworkConnectionLimit on the connector: at the limit Jetty
 *                                  stops accepting (new connections wait in the listen backlog)
 *
 * There is no ledger: observe Jetty through the socket table. Prints "JettyLauncher: listening on
 * http://H:P" once the connector is started; SIGTERM stops the server (closing its connections).
 */

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

import org.eclipse.jetty.http.HttpHeader;
import org.eclipse.jetty.server.Handler;
import org.eclipse.jetty.server.NetworkConnectionLimit;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Response;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.Callback;
import org.eclipse.jetty.util.Fields;

public final class JettyLauncher {
    private static final int MAX_BYTES = 64 * 1024 * 1024;
    private static final int MAX_SLEEP_MS = 600_000;

    public static void main(String[] args) throws Exception {
        String host = "127.0.0.1";
        Integer port = null;
        Long idleTimeoutMs = null;
        Integer maxConnections = null;
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                usage("flag " + args[i] + " needs a value");
            }
            String value = args[i + 1];
            switch (args[i]) {
                case "--host": host = value; break;
                case "--port": port = Integer.parseInt(value); break;
                case "--idle-timeout-ms": idleTimeoutMs = Long.parseLong(value); break;
                case "--max-connections": maxConnections = Integer.parseInt(value); break;
                default: usage("unknown flag " + args[i]);
            }
        }
        if (port == null) {
            usage("--port is required");
        }
        if (!(host.startsWith("127.") || host.startsWith("198.18.") || host.startsWith("198.19."))) {
            usage("--host " + host + ": only 127.0.0.0/8 and 198.18.0.0/15 addresses are allowed");
        }
        Server server = new Server();
        ServerConnector connector = new ServerConnector(server);
        connector.setHost(host);
        connector.setPort(port);
        if (idleTimeoutMs != null) {
            connector.setIdleTimeout(idleTimeoutMs);
        }
        server.addConnector(connector);
        if (maxConnections != null) {
            server.addBean(new NetworkConnectionLimit(maxConnections, connector));
        }
        server.setHandler(new LedgerPaths());
        server.setStopAtShutdown(true); // SIGTERM: stop the server, closing its connections
        server.start();
        System.out.println("JettyLauncher: listening on http://" + host + ":" + connector.getLocalPort()
                + " (Jetty " + Server.getVersion() + ", idle timeout " + connector.getIdleTimeout() + " ms)");
        System.out.flush();
        server.join();
    }

    private static void usage(String message) {
        System.err.println("JettyLauncher: " + message);
        System.exit(2);
    }

    /** The ledger's paths (SPEC §4.5) minus /drop-nth and the admin API. */
    static final class LedgerPaths extends Handler.Abstract {
        @Override
        public boolean handle(Request request, Response response, Callback callback) throws Exception {
            // Read the body first (an unread body would make Jetty close the connection).
            while (true) {
                var chunk = request.read();
                if (chunk == null) {
                    break; // no body, or nothing more (a plain GET)
                }
                chunk.release();
                if (chunk.isLast()) {
                    break;
                }
            }
            String path = Request.getPathInContext(request);
            Fields query = Request.extractQueryParameters(request);
            int status = 200;
            byte[] body = "ok\n".getBytes(StandardCharsets.US_ASCII);
            if (path.equals("/sleep")) {
                int ms = intParam(query, "ms", MAX_SLEEP_MS);
                if (ms < 0) {
                    status = 400;
                    body = "ms must be 0..600000\n".getBytes(StandardCharsets.US_ASCII);
                } else {
                    Thread.sleep(ms);
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
                int n = intParam(query, "n", MAX_BYTES);
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
            response.setStatus(status);
            if (status == 204 || status == 304) {
                callback.succeeded();
                return true;
            }
            response.getHeaders().put(HttpHeader.CONTENT_TYPE, "text/plain");
            response.getHeaders().put(HttpHeader.CONTENT_LENGTH, body.length);
            response.write(true, ByteBuffer.wrap(body), callback);
            return true;
        }

        /** The integer query parameter in 0..max, or -1 when absent/invalid/out of range. */
        private static int intParam(Fields query, String name, int max) {
            String v = query.getValue(name);
            if (v == null) {
                return -1;
            }
            try {
                int n = Integer.parseInt(v);
                return n >= 0 && n <= max ? n : -1;
            } catch (NumberFormatException e) {
                return -1;
            }
        }
    }
}
