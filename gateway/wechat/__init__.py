"""WeChat server API: the async client and the open-data cryptography."""
