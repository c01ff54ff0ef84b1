package main

import (
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
)

func testMod(t *testing.T, dir, gomod string) mod {
	t.Helper()
	f, err := modfile.Parse(dir+"/go.mod", []byte(gomod), nil)
	if err != nil {
		t.Fatal(err)
	}
	return mod{dir: dir, path: f.Module.Mod.Path, gomod: []byte(gomod), file: f}
}

func TestReleaseOrderAndNotes(t *testing.T) {
	core := testMod(t, ".", "module example.com/m\n")
	otel := testMod(t, "otel", "module example.com/m/otel\nrequire example.com/m v0.1.0\n")
	app := testMod(t, "app", "module example.com/m/app\nrequire (\n\texample.com/m/otel v0.1.0\n\texample.com/m/store v0.0.0-00010101000000-000000000000\n)\n")
	store := testMod(t, "store", "module example.com/m/store\nrequire example.com/m v0.0.9\n")
	tools := testMod(t, "tools", "module example.com/m/tools\nrequire example.com/m v0.1.0\n")
	mods := []mod{core, app, otel, store, tools}

	order, err := releaseOrder(mods)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range order {
		got = append(got, tagOf(m, "v0.1.0"))
	}
	if want := "v0.1.0 otel/v0.1.0 store/v0.1.0 app/v0.1.0"; strings.Join(got, " ") != want {
		t.Errorf("tags in release order = %s, want %s (tools is never released)", strings.Join(got, " "), want)
	}

	notes := strings.Join(append(requirementNotes(app, mods, "v0.1.0"), requirementNotes(store, mods, "v0.1.0")...), "\n")
	for _, want := range []string{"example.com/m/store v0.0.0-00010101000000-000000000000, a placeholder", "example.com/m v0.0.9, not the candidate v0.1.0"} {
		if !strings.Contains(notes, want) {
			t.Errorf("requirementNotes = %q, want a note with %q", notes, want)
		}
	}
	if n := requirementNotes(otel, mods, "v0.1.0"); len(n) != 0 {
		t.Errorf("requirementNotes(otel) = %q, want none", n)
	}
}

func TestReleaseOrderRefusesCycles(t *testing.T) {
	a := testMod(t, "a", "module example.com/m/a\nrequire example.com/m/b v0.1.0\n")
	b := testMod(t, "b", "module example.com/m/b\nrequire example.com/m/a v0.1.0\n")
	if _, err := releaseOrder([]mod{a, b}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("releaseOrder(a <-> b) error = %v, want a cycle", err)
	}
}
