"""The four ba3c services; each folder is one service and imports only `ba3c` (never another
service). services/NAME/ is imported as `services.NAME` and started by `ba3c NAME`."""
