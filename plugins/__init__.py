"""dlg's built-in plugins, written exactly as third-party plugins are."""
