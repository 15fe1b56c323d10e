module github.com/parleyhq/parley

go 1.26.0

require (
	github.com/chromedp/chromedp v0.23.0
	github.com/lesismal/nbio v1.6.12
)

require (
	github.com/chromedp/cdproto v0.159.0 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	github.com/lesismal/llib v1.2.5 // indirect
	golang.org/x/crypto v0.59.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
