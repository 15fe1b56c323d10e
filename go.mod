module github.com/parleyhq/parley

go 1.26.0

require github.com/lesismal/nbio v1.6.12

require (
	github.com/lesismal/llib v1.2.5 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
