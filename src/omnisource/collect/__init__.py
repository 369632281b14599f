"""Collection (DESIGN.md §1): class names -> queries and hashtags, URL lists -> local files."""
