"""MCP server for zygote sandboxes (stdio transport); run ``zygote-mcp``."""

from .server import TOOL_NAMES, Tools, build_server, main

__all__ = ["TOOL_NAMES", "Tools", "build_server", "main"]
