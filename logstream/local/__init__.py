"""Local servers that logstream starts itself: a mosquitto broker and an
Elasticsearch-API server (noida-db), for `logstream run` with sinks set to
`local` and for the test suite's fixtures."""
