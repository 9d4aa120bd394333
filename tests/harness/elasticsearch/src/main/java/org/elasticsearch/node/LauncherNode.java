package org.elasticsearch.node;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.http.HttpServerTransport;
import org.elasticsearch.plugins.ClasspathPluginsService;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.transport.netty4.Netty4Plugin;

/**
 * Starts one Elasticsearch node for tests from jars on the classpath.
 *
 * <pre>java -Xms512m -Xmx512m -cp 'lib/*:launcher.jar' org.elasticsearch.node.LauncherNode HOME HTTP_PORT</pre>
 *
 * Data and logs go under HOME. HTTP_PORT may be 0 (any free port). When the node serves
 * requests it prints {@code READY http://127.0.0.1:PORT}; on SIGTERM it closes the node.
 *
 * <p>The class is in ES's node package because its hooks are package-private in 8.15:
 * the {@code Node(NodeConstruction)} constructor, {@code NodeConstruction.prepareConstruction}
 * and {@code NodeServiceProvider}. The public {@code Node(Environment)} would load plugins
 * only from modules/ and plugins/ directories, and there the Netty transport is missing.
 */
public final class LauncherNode extends Node {

    static final String NAME = "opsstack-test";

    private LauncherNode(Environment environment) {
        super(NodeConstruction.prepareConstruction(environment, new ClasspathServices(), true));
    }

    /** Replaces only the plugin loading: Netty4 (HTTP + transport) from the classpath. */
    private static final class ClasspathServices extends NodeServiceProvider {
        @Override
        PluginsService newPluginService(Environment environment, Settings settings) {
            return new ClasspathPluginsService(settings, environment.configFile(), List.of(Netty4Plugin.class));
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: LauncherNode HOME_DIR HTTP_PORT");
            System.exit(2);
        }
        // Before anything touches log4j or Netty. ES's launcher sets these in jvm.options:
        // the node closes itself on shutdown, so log4j must not stop first in its own hook;
        // Netty must not set the processor count that ES already set from node.processors.
        System.setProperty("log4j.shutdownHookEnabled", "false");
        System.setProperty("log4j2.disable.jmx", "true");
        System.setProperty("es.set.netty.runtime.available.processors", "false");

        Path home = Path.of(args[0]).toAbsolutePath();
        Files.createDirectories(home.resolve("config"));
        Settings settings = Settings.builder()
            .put("cluster.name", NAME)
            .put("node.name", NAME)
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", args[1])
            .put("transport.port", "0")
            .put("node.processors", 1)
            // The real-memory breaker assumes ES's own GC settings; with a small heap it trips.
            .put("indices.breaker.total.use_real_memory", false)
            // A test node must not turn read-only because the developer's disk is 95% full.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("logger.level", "INFO")
            .build();

        // ES's own bootstrap does this; without it the node's LogManager has no implementation.
        // Console only: the harness captures stdout into its log file.
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(NAME);
        LogConfigurator.configureWithoutConfig(settings);

        LauncherNode node = new LauncherNode(new Environment(settings, home.resolve("config")));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "launcher-shutdown"));

        node.start();
        int port = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().getPort();
        System.out.println("READY http://127.0.0.1:" + port);
        System.out.flush();
        // ES's threads are daemons: keep the JVM alive until the shutdown hook has run.
        closed.await();
    }
}
