"""Running as a service: configuration, logging, systemd notify and watchdog, signals."""
