"""The ``tgw`` subcommands, one module each, and what they share (options, serving,
progress). A command imports the runtime, the outputs and the CI tools; never another
command."""
