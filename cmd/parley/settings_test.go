package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSampleIsDefault: parley config sample's file, read back, is the
// server with no settings at all, and names every setting's environment
// variable.
func TestSampleIsDefault(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"config", "sample"}, &out, io.Discard); code != 0 {
		t.Fatalf("config sample: exit %d", code)
	}
	file := writeFile(t, "p.toml", out.String())
	def, err := parseServe(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseServe([]string{"--config", file}, io.Discard)
	if err != nil {
		t.Fatalf("the sample: %v", err)
	}
	if !reflect.DeepEqual(got, def) {
		t.Fatalf("the sample's server:\n%+v\nwant the default:\n%+v", got, def)
	}
	fs, _, _ := serveFlags(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if !strings.Contains(out.String(), "\n"+f.Name+" = ") || !strings.Contains(out.String(), "# env: "+envName(f.Name)+"\n") {
			t.Errorf("the sample has no key or no environment variable for --%s", f.Name)
		}
	})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"config", "check", file}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "ok") {
		t.Fatalf("config check of the sample: exit %d, %s%s", code, stdout.String(), stderr.String())
	}
}

// TestEveryFlagHasEnv: the environment is asked for every setting.
func TestEveryFlagHasEnv(t *testing.T) {
	fs, _, _ := serveFlags(io.Discard)
	var asked []string
	if err := applySettings(fs, func(name string) (string, bool) { asked = append(asked, name); return "", false }); err != nil {
		t.Fatal(err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && !slices.Contains(asked, envName(f.Name)) {
			t.Errorf("--%s: %s is not read", f.Name, envName(f.Name))
		}
	})
}

// TestPrecedence: flags over the environment over the file over the
// defaults; a list comes whole from one source.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, "p.toml", "max-connections = 100\nallow-origin = [\"https://a.example\"]\nhistory-size = 7\n")
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		conns   int
		origins []string
	}{
		{"file", nil, nil, 100, []string{"https://a.example"}},
		{"env", map[string]string{"PARLEY_MAX_CONNECTIONS": "200", "PARLEY_ALLOW_ORIGIN": "https://b.example, https://c.example"}, nil,
			200, []string{"https://b.example", "https://c.example"}},
		{"flags", map[string]string{"PARLEY_MAX_CONNECTIONS": "200"}, []string{"--max-connections", "300", "--allow-origin", "https://d.example"},
			300, []string{"https://d.example"}},
		{"PARLEY_CONFIG", map[string]string{"PARLEY_CONFIG": file}, nil, 100, []string{"https://a.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := tc.args
			if tc.env["PARLEY_CONFIG"] == "" {
				args = append([]string{"--config", file}, args...)
			}
			cfg, err := parseServe(args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Engine.MaxConnections != tc.conns || !slices.Equal(cfg.Engine.AllowedOrigins, tc.origins) || cfg.Chat.HistorySize != 7 {
				t.Fatalf("max-connections %d, origins %q, history-size %d; want %d, %q, 7",
					cfg.Engine.MaxConnections, cfg.Engine.AllowedOrigins, cfg.Chat.HistorySize, tc.conns, tc.origins)
			}
		})
	}
}

// TestConfigFileErrors: a bad file is refused naming its line and key.
func TestConfigFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"unknown", "addr = \"localhost:1\"\nmax-conections = 5\n", "p.toml:2: max-conections: unknown setting, did you mean max-connections?"},
		{"bad value", "\n\nmax-connections = \"many\"\n", `p.toml:3: max-connections = "many": invalid value`},
		{"wrong kind", "heartbeat-interval = true\n", `p.toml:1: heartbeat-interval = "true"`},
		{"list for one", "addr = [\"a\", \"b\"]\n", "p.toml:1: addr: a list, for a setting that takes one value"},
		{"section", "addr = \"x:1\"\n[engine]\nwriters = 2\n", "p.toml:2: sections are not settings"},
		{"dotted", "engine.writers = 2\n", "p.toml:1: engine: dotted keys are not settings"},
		{"twice", "writers = 2\nwriters = 3\n", "p.toml:2"},
		{"syntax", "writers = \n", "p.toml:1"},
		{"invalid combination", "pprof = true\n", "--pprof needs --metrics-listen"},
		{"the file itself", "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "missing.toml")
			if tc.content != "" {
				file = writeFile(t, "p.toml", tc.content)
			}
			_, err := parseServe([]string{"--config", file}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one holding %q", err, tc.want)
			}
		})
	}
	t.Setenv("PARLEY_WRITERS", "two")
	if _, err := parseServe(nil, io.Discard); err == nil || !strings.Contains(err.Error(), `PARLEY_WRITERS="two"`) {
		t.Fatalf("a bad environment variable: %v", err)
	}
}

// TestREADMEFlags: the README's table of parley serve's flags names every
// flag.
func TestREADMEFlags(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs, _, _ := serveFlags(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		if !bytes.Contains(readme, []byte("`--"+f.Name+"`")) {
			t.Errorf("README.md does not document --%s", f.Name)
		}
	})
}
