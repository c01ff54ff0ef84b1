package main

import (
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// screen is what CONTRIBUTING.md calls one screen: the most lines that
// `go doc` of a library package may print (its package doc and the list of
// its names). The details belong on the names, where `go doc pkg.Name` shows
// them, or in a module's README.md.
const screen = 65

// TestGoDocFitsOneScreen holds CONTRIBUTING.md's promise that a package's
// `go doc` fits one screen, for every library package of every module: the
// packages a user imports, not commands, examples, benchmarks, tools or
// internal packages.
func TestGoDocFitsOneScreen(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go not on PATH: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := libraryPackages(t, root)
	if len(pkgs) < 20 {
		t.Fatalf("found %d library packages under %s, want the whole repository (20 or more): %v", len(pkgs), root, pkgs)
	}
	for _, dir := range pkgs {
		rel, _ := filepath.Rel(root, dir)
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command("go", "doc", ".")
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go doc: %v: %s", err, stderr.String())
			}
			if n := bytes.Count(out, []byte("\n")); n > screen {
				t.Errorf("go doc prints %d lines, more than one screen (%d): move the details onto the names they describe", n, screen)
			}
		})
	}
}

// libraryPackages returns the directories under root that hold a non-main
// package with non-test Go files, leaving out examples, benchmarks, tools,
// internal packages and testdata.
func libraryPackages(t *testing.T, root string) []string {
	t.Helper()
	skip := map[string]bool{"examples": true, "benchmarks": true, "tools": true, "internal": true, "testdata": true}
	var dirs []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root && (skip[d.Name()] || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(path, n), nil, parser.PackageClauseOnly)
			if err != nil {
				return err
			}
			if f.Name.Name != "main" {
				dirs = append(dirs, path)
			}
			break
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}
