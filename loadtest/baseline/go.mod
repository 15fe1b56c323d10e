module github.com/parleyhq/parley/loadtest/baseline

go 1.26.0

require github.com/gorilla/websocket v1.5.3
