import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.web.servlet.ServletComponentScan;
import org.springframework.scheduling.annotation.EnableScheduling;

/**
 * Starts the real Nacos server modules (io.springboot.nacos 2.2.4: nacos-naming, -core, -sys, ...)
 * the way the distribution's console main class {@code com.alibaba.nacos.Nacos} does, which that
 * republish does not ship: a Spring Boot application over {@code com.alibaba.nacos} with servlet
 * component scan and scheduling. Nothing of Nacos is changed or replaced.
 *
 * <p>Spring Security's auto-configuration is left out: the console module that configures it
 * (permit-all under {@code nacos.core.auth.enabled=false}) is absent, and without it Spring Boot's
 * default secures every endpoint with HTTP Basic (every call answers 401). Settings come as system
 * properties from the peer manifest (port, address, home, standalone, function mode).
 */
@SpringBootApplication(scanBasePackages = "com.alibaba.nacos", excludeName = {
        "org.springframework.boot.autoconfigure.security.servlet.SecurityAutoConfiguration",
        "org.springframework.boot.actuate.autoconfigure.security.servlet.ManagementWebSecurityAutoConfiguration"})
@ServletComponentScan
@EnableScheduling
public class NacosServerLauncher {
    public static void main(String[] args) {
        SpringApplication.run(NacosServerLauncher.class, args);
    }
}
