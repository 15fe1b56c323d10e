package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Settings from a file and the environment: parley serve's flags are its
// settings, and each has a key in the config file (the flag's name:
// max-connections = 19000) and an environment variable (PARLEY_ and the
// name in capitals, '-' as '_': PARLEY_MAX_CONNECTIONS=19000). The
// command line wins over the environment, which wins over the file,
// which wins over the defaults. A repeatable flag (allow-origin) is a
// list in the file, and in the environment a comma-separated one; the
// source that gives it gives all of it.

// configEnv names the config file when --config is not given.
const configEnv = "PARLEY_CONFIG"

// envName returns the environment variable of the flag called name.
func envName(name string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// repeatable reports whether f may be given more than once.
func repeatable(f *flag.Flag) bool {
	_, ok := f.Value.(*stringList)
	return ok
}

// applySettings sets the flags of fs the command line did not set from
// the environment (env looks a variable up) and then, for those still
// unset, from the config file named by --config or PARLEY_CONFIG.
func applySettings(fs *flag.FlagSet, env func(string) (string, bool)) error {
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fromEnv := map[string]bool{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := env(envName(f.Name))
		if !ok || onCommandLine[f.Name] || err != nil || f.Name == "config" {
			return
		}
		values := []string{v}
		if repeatable(f) {
			values = splitList(v)
		}
		for _, v := range values {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: invalid value: %w", envName(f.Name), v, e)
				return
			}
		}
		fromEnv[f.Name] = true
	})
	if err != nil {
		return err
	}
	path := fs.Lookup("config").Value.String()
	if path == "" {
		path, _ = env(configEnv)
	}
	if path == "" {
		return nil
	}
	settings, err := readConfigFile(path, fs)
	if err != nil {
		return err
	}
	for _, s := range settings {
		if onCommandLine[s.key] || fromEnv[s.key] {
			continue
		}
		for _, v := range s.values {
			if err := fs.Set(s.key, v); err != nil {
				return fmt.Errorf("%s:%d: %s = %q: invalid value: %w", path, s.line, s.key, v, err)
			}
		}
	}
	return nil
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// setting is one key of a config file, its value as flag values, and
// its line.
type setting struct {
	key    string
	values []string
	line   int
}

// readConfigFile reads the TOML file at path: flat key = value pairs
// whose keys are fs's flags. An unknown key, a section, a key given
// twice or a value of the wrong kind is an error naming the file, the
// line and the key.
func readConfigFile(path string, fs *flag.FlagSet) ([]setting, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, fmt.Errorf("%s:%d: %v", path, line, de)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// The values come from Unmarshal; their lines from the parser.
	var out []setting
	p := unstable.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			it := e.Key()
			it.Next()
			line := p.Shape(it.Node().Raw).Start.Line
			return nil, fmt.Errorf("%s:%d: sections are not settings: the file is flat (key = value)", path, line)
		case unstable.KeyValue:
		default:
			continue
		}
		it := e.Key()
		it.Next()
		k := it.Node()
		key, line := string(k.Data), p.Shape(k.Raw).Start.Line
		if it.Next() {
			return nil, fmt.Errorf("%s:%d: %s: dotted keys are not settings: the file is flat (key = value)", path, line, key)
		}
		f := fs.Lookup(key)
		if f == nil || key == "config" {
			return nil, fmt.Errorf("%s:%d: %s: unknown setting%s (parley config sample lists them)", path, line, key, suggest(key, fs))
		}
		values, err := flagValues(doc[key], repeatable(f))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, line, key, err)
		}
		out = append(out, setting{key: key, values: values, line: line})
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// flagValues returns the flag values of a TOML value: a string as it is,
// a number or a boolean as the flag package reads it, and a list (for a
// repeatable flag only) as one value per item.
func flagValues(v any, list bool) ([]string, error) {
	if items, ok := v.([]any); ok {
		if !list {
			return nil, errors.New("a list, for a setting that takes one value")
		}
		out := make([]string, 0, len(items))
		for _, x := range items {
			s, ok := x.(string)
			if !ok {
				return nil, fmt.Errorf("a list item %v: want strings", x)
			}
			out = append(out, s)
		}
		return out, nil
	}
	switch x := v.(type) {
	case string:
		return []string{x}, nil
	case int64:
		return []string{strconv.FormatInt(x, 10)}, nil
	case float64:
		return []string{strconv.FormatFloat(x, 'g', -1, 64)}, nil
	case bool:
		return []string{strconv.FormatBool(x)}, nil
	}
	return nil, fmt.Errorf("a %T: want a string, a number, a boolean or (repeatable settings) a list of strings", v)
}

// suggest returns ", did you mean X?" for the flag closest to key, if
// one is close.
func suggest(key string, fs *flag.FlagSet) string {
	best, bestD := "", 4
	fs.VisitAll(func(f *flag.Flag) {
		if d := distance(key, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return ", did you mean " + best + "?"
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// writeSample writes a config file holding every setting of fs at its
// default, each after its help and environment variable.
func writeSample(w io.Writer, fs *flag.FlagSet) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# parley serve's settings, each at its default (parley config sample).\n")
	fmt.Fprintf(&b, "# Keys are the flags' names; flags, then PARLEY_* environment variables, override this file.\n")
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	for _, f := range flags {
		if f.Name == "config" {
			continue
		}
		_, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "\n# %s\n# env: %s\n", wrap(usage, 98), envName(f.Name))
		fmt.Fprintf(&b, "%s = %s\n", f.Name, tomlValue(f))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// tomlValue is f's default as a TOML value of the kind its flag reads.
func tomlValue(f *flag.Flag) string {
	if repeatable(f) {
		return "[]"
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case bool, int, int64, uint, uint64, float64:
			return f.DefValue
		}
	}
	return strconv.Quote(f.DefValue) // strings, durations, levels, "off"
}

// wrap wraps s at width, lines after the first starting "# ".
func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 && n+1+len(w) > width {
			b.WriteString("\n# ")
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

// runConfig is `parley config`: sample writes a config file of every
// setting at its default; check FILE validates one as parley serve
// would (values, combinations, key files).
func runConfig(args []string, stdout, stderr io.Writer) error {
	const use = "usage: parley config sample | parley config check FILE"
	switch {
	case len(args) == 1 && args[0] == "sample":
		fs, _, _ := serveFlags(io.Discard)
		return writeSample(stdout, fs)
	case len(args) == 2 && args[0] == "check":
		if _, err := parseServe([]string{"--config", args[1]}, stderr); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", args[1])
		return nil
	}
	fmt.Fprintln(stderr, use)
	return errUsage
}
