"""Methods of kind ``tool_loop`` (need ``tool``): a generate loop that runs tool calls."""
