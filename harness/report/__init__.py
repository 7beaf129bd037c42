"""Reports from result files: tables (pandas), then plots (matplotlib), then Markdown and HTML."""
