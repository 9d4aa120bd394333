package org.elasticsearch.plugins;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import org.elasticsearch.Version;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.jdk.ModuleQualifiedExportsService;

/**
 * A PluginsService whose plugins are classes already on the classpath, not bundles unpacked
 * under modules/ and plugins/ (a Maven Central install has no such directories).
 *
 * <p>It sits in this package because the pieces it reuses are package-private in 8.15:
 * the {@code LoadedPlugin} record, {@code loadPlugin} and {@code loadExtensions}.
 */
public final class ClasspathPluginsService extends PluginsService {

    private final List<LoadedPlugin> loaded;

    public ClasspathPluginsService(Settings settings, Path configDir, List<Class<? extends Plugin>> pluginClasses) {
        // null module and plugin directories: the parent scans nothing on disk.
        super(settings, configDir, null, null);
        // loadPlugin picks the constructor ES plugins declare: (), (Settings) or (Settings, Path).
        loaded = pluginClasses.stream()
            .map(type -> new LoadedPlugin(descriptor(type), loadPlugin(type, settings, configDir)))
            .toList();
        // Lets plugins that extend others (ExtensiblePlugin) see their extensions, as the parent does.
        loadExtensions(loaded);
    }

    private static PluginDescriptor descriptor(Class<? extends Plugin> type) {
        return new PluginDescriptor(
            type.getSimpleName(), "loaded from the classpath", Version.CURRENT.toString(), Version.CURRENT.toString(),
            "17", type.getName(), null /* no module name: classpath */, List.of() /* extends nothing */,
            false /* native controller */, false /* licensed */, false /* modular */, false /* stable API */);
    }

    /** The parent calls this for every plugin lookup; its own list is empty here. */
    @Override
    protected List<LoadedPlugin> plugins() {
        return loaded;
    }

    /**
     * The parent reads the server module's qualified exports from the boot module layer,
     * which only exists when ES runs on the module path. On the classpath there is nothing
     * to wire (ES's own test framework does the same in MockPluginsService).
     */
    @Override
    protected void addServerExportsService(Map<String, List<ModuleQualifiedExportsService>> qualifiedExports) {
    }
}
