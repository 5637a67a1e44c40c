"""The running gateway: link runners and device sessions, the journal, the Output
interface, HTTP endpoints, captures and metrics. Imports no output and no command."""
