"""Collection (docs/guide.md): class names -> queries and hashtags, URL lists -> local files."""
