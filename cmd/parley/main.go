// Command parley runs Parley, a WebSocket chat server built to hold very
// many connections on little hardware.
//
// Usage:
//
//	parley serve [flags]     run the server (parley serve --help lists the flags)
//	parley cluster [flags]   run a one-machine cluster of nodes and NATS servers
//	parley nats [flags]      run one NATS server (alone or clustered)
//	parley loadtest [flags]  open many clients against loopback servers and report
//	parley config sample     print a config file of every serve setting at its default
//	parley config check FILE check a config file as parley serve would
//	parley version           print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

const usage = `Parley: a WebSocket chat server.

Usage:
  parley serve [flags]     run the server (parley serve --help for flags)
  parley cluster [flags]   run a one-machine cluster: embedded NATS and N nodes (parley cluster --help)
  parley nats [flags]      run one NATS server, alone or one of a NATS cluster (parley nats --help)
  parley loadtest [flags]  load a server with many clients (parley loadtest --help)
  parley config sample     print a config file (TOML) of every serve setting at its default
  parley config check FILE check a config file as parley serve would read it
  parley version           print the version and exit
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(args[1:], stdout, stderr)
	case "cluster":
		err = runCluster(args[1:], stderr)
	case "nats":
		err = runNATS(args[1:], stderr)
	case "loadtest":
		err = runLoadtest(args[1:], stdout, stderr)
	case "config":
		err = runConfig(args[1:], stdout, stderr)
	case "loadtest-worker": // started by `parley loadtest` itself, past 17,000 clients
		err = runLoadtestWorker(stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, version())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "parley: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "parley %s: %v\n", args[0], err)
		return 1
	}
}

// Set at link time by the Makefile (-ldflags -X), since builds here may not
// record VCS information; empty means "take it from the build info".
var (
	buildVersion  string
	buildRevision string
)

// errUsage marks a command-line error already reported by the flag package.
var errUsage = errors.New("usage error")

// version returns the module version and VCS revision the binary was built
// from, as far as the build recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "parley (unknown version)"
	}
	v := "parley " + bi.Main.Version
	if buildVersion != "" {
		v = "parley " + buildVersion
	}
	if buildRevision != "" {
		v += " " + buildRevision
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && buildRevision == "" {
			v += " " + s.Value
		}
	}
	return v + " " + bi.GoVersion
}
