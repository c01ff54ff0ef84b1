// Command releasecheck checks that every module of the repository can be
// installed by a user, with `go get`, on its own.
//
// It publishes each released module, at a candidate version, into a
// file-based module proxy in a temporary directory (the layout of the GOPROXY
// protocol: <module>/@v/list, .info, .mod and .zip, the zip made by
// golang.org/x/mod/zip, so that nested modules are left out of their
// parent's zip as the go command requires). Then, for each module, in a fresh
// module outside the repository, with GOWORK=off (no go.work, and the
// replace directives of a dependency are ignored, as for any user), it runs
// `go get <module>@<version>`, builds every package of the module and builds
// and runs a small program that uses it: testdata/smoke/<module dir>/.
//
// The go command finds the candidate modules in the temporary proxy, and
// third-party modules in the module cache's download directory, then in the
// machine's usual GOPROXY ("direct" left out), so that the check needs no
// network when the cache is warm. The checksum database is not asked about
// github.com/bulwark-go (GONOSUMDB), and the fresh module's go.sum starts
// with the repository's go.sum lines, so that third-party modules are
// verified without asking it either.
//
// The check uses the machine's module cache, so that the build cache already
// holds the third-party packages (`make test` compiled them from the same
// directories) and a run takes seconds, not minutes. It removes
// github.com/bulwark-go from that cache before and after the run, so that
// no earlier candidate is taken for this one (the repository's own modules
// never come from the cache otherwise: go.work and the replace directives
// point at the working tree), and holds a lock file meanwhile, so that two
// runs do not mix their candidates.
//
// Usage, from the tools directory:
//
//	go run ./releasecheck [-version v0.1.0] [-keep] [-v]
//	go run ./releasecheck -version v0.2.0 -bump
//
// With -bump, it only rewrites the requirements of every module on the
// modules of the repository to -version, the first step of a release.
//
// It exits with status 1, after checking every module, if any could not be
// installed, built or run, and names each one that failed.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
)

// notReleased names the module directories that are not published, and why.
// Every other module must have a smoke program.
var notReleased = map[string]string{
	"tools":      "the release tooling itself",
	"benchmarks": "measurements against peer libraries, not for users",
}

// smokeDir is where the smoke programs live, relative to the repository.
const smokeDir = "tools/releasecheck/testdata/smoke"

func main() {
	version := flag.String("version", "v0.1.0", "the candidate version")
	keep := flag.Bool("keep", false, "keep the temporary directory")
	verbose := flag.Bool("v", false, "print the output of every go command")
	bumpOnly := flag.Bool("bump", false, "set every requirement on a module of the repository to -version, and check nothing")
	flag.Parse()
	var err error
	if *bumpOnly {
		err = bump(*version)
	} else {
		err = run(*version, *keep, *verbose)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "release-check:", err)
		os.Exit(1)
	}
}

// mod is one module of the repository.
type mod struct {
	dir   string // relative to the repository, slash-separated; "." for the root
	path  string // module path
	gomod []byte
	file  *modfile.File
}

func run(version string, keep, verbose bool) error {
	start := time.Now()
	if !semver.IsValid(version) || semver.Canonical(version) != version || semver.Build(version) != "" {
		return fmt.Errorf("-version %q: want a canonical semantic version such as v0.1.0", version)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	root, err := output(ctx, "", nil, "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	root = strings.TrimSpace(root)
	mods, err := findModules(root)
	if err != nil {
		return err
	}
	released, err := releaseOrder(mods)
	if err != nil {
		return err
	}
	for _, m := range released {
		if _, err := os.Stat(filepath.Join(root, smokeDir, smokeName(m), "main.go")); err != nil {
			return fmt.Errorf("module %s has no smoke program: add %s/%s/main.go, or list it in notReleased with a reason", m.path, smokeDir, smokeName(m))
		}
	}

	tmp, err := os.MkdirTemp("", "bulwark-release-check-")
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(root, tmp); err == nil && !strings.HasPrefix(rel, "..") {
		return fmt.Errorf("the temporary directory %s is inside the repository; set TMPDIR elsewhere", tmp)
	}
	if keep {
		fmt.Println("release-check: keeping", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	cache, err := output(ctx, "", nil, "go", "env", "GOMODCACHE")
	if err != nil {
		return err
	}
	unlock, err := claimCache(strings.TrimSpace(cache))
	if err != nil {
		return err
	}
	defer unlock()

	proxy := filepath.Join(tmp, "proxy")
	for _, m := range released {
		if err := publish(ctx, root, proxy, m, version); err != nil {
			return fmt.Errorf("publishing %s: %w", m.path, err)
		}
	}
	fmt.Printf("release-check: published %d modules at %s into %s\n", len(released), version, proxy)
	for _, m := range released {
		for _, note := range requirementNotes(m, mods, version) {
			fmt.Println("release-check: note:", note)
		}
	}

	env, err := checkEnv(ctx, strings.TrimSpace(cache), proxy)
	if err != nil {
		return err
	}
	sums, err := repoSums(root)
	if err != nil {
		return err
	}
	goVersion := mods[0].file.Go.Version
	var failed []string
	for _, m := range released {
		t0 := time.Now()
		out, err := check(ctx, root, tmp, env, sums, goVersion, m, version, verbose)
		if err != nil {
			fmt.Printf("FAIL %s@%s (%.1fs): %v\n%s", m.path, version, time.Since(t0).Seconds(), err, indent(out))
			failed = append(failed, m.path)
			continue
		}
		fmt.Printf("ok   %s@%s (%.1fs)\n", m.path, version, time.Since(t0).Seconds())
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d modules cannot be installed on their own at %s: %s", len(failed), len(released), version, strings.Join(failed, ", "))
	}
	var tags []string
	for _, m := range released {
		tags = append(tags, tagOf(m, version))
	}
	fmt.Printf("release-check: every module installs on its own (%.0fs). Tags, in dependency order: %s\n", time.Since(start).Seconds(), strings.Join(tags, " "))
	return nil
}

// bump sets every requirement on a module of the repository to version.
func bump(version string) error {
	if !semver.IsValid(version) || semver.Canonical(version) != version {
		return fmt.Errorf("-version %q: want a canonical semantic version such as v0.1.0", version)
	}
	root, err := output(context.Background(), "", nil, "git", "rev-parse", "--show-toplevel")
	if err != nil {
		return err
	}
	root = strings.TrimSpace(root)
	mods, err := findModules(root)
	if err != nil {
		return err
	}
	repo := map[string]bool{}
	for _, m := range mods {
		repo[m.path] = true
	}
	for _, m := range mods {
		changed := false
		for _, r := range m.file.Require {
			if old := r.Mod; repo[old.Path] && old.Version != version {
				if err := m.file.AddRequire(old.Path, version); err != nil {
					return err
				}
				fmt.Printf("%s/go.mod: %s %s -> %s\n", m.dir, old.Path, old.Version, version)
				changed = true
			}
		}
		if !changed {
			continue
		}
		data, err := m.file.Format()
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, filepath.FromSlash(m.dir), "go.mod"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// findModules returns the modules under root, the root's first.
func findModules(root string) ([]mod, error) {
	var mods []mod
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Name() != "go.mod" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f, err := modfile.Parse(p, data, nil)
		if err != nil {
			return err
		}
		if f.Module == nil {
			return fmt.Errorf("%s has no module line", p)
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		mods = append(mods, mod{dir: filepath.ToSlash(rel), path: f.Module.Mod.Path, gomod: data, file: f})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].dir == "." || mods[j].dir != "." && mods[i].dir < mods[j].dir })
	if len(mods) == 0 || mods[0].dir != "." {
		return nil, errors.New("no go.mod at the repository's root")
	}
	return mods, nil
}

// releaseOrder returns the released modules, each after the modules of the
// repository it requires: the order in which to tag them.
func releaseOrder(mods []mod) ([]mod, error) {
	byPath := map[string]mod{}
	for _, m := range mods {
		if _, skip := notReleased[m.dir]; !skip {
			byPath[m.path] = m
		}
	}
	var order []mod
	done := map[string]bool{}
	visiting := map[string]bool{}
	var visit func(m mod) error
	visit = func(m mod) error {
		if done[m.path] {
			return nil
		}
		if visiting[m.path] {
			return fmt.Errorf("modules require each other in a cycle through %s", m.path)
		}
		visiting[m.path] = true
		for _, r := range m.file.Require {
			if dep, ok := byPath[r.Mod.Path]; ok {
				if err := visit(dep); err != nil {
					return err
				}
			}
		}
		done[m.path] = true
		order = append(order, m)
		return nil
	}
	for _, p := range slices.Sorted(maps.Keys(byPath)) {
		if err := visit(byPath[p]); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// smokeName is the directory of m's smoke program under smokeDir.
func smokeName(m mod) string {
	if m.dir == "." {
		return "core"
	}
	return m.dir
}

// tagOf is the git tag that releases m at version.
func tagOf(m mod, version string) string {
	if m.dir == "." {
		return version
	}
	return m.dir + "/" + version
}

// requirementNotes explains the requirements of m on modules of the
// repository that this run does not publish: the likely cause if `go get`
// then fails.
func requirementNotes(m mod, mods []mod, version string) []string {
	repo := map[string]string{}
	for _, x := range mods {
		repo[x.path] = x.dir
	}
	var notes []string
	for _, r := range m.file.Require {
		dir, ok := repo[r.Mod.Path]
		if !ok {
			continue
		}
		switch {
		case module.IsPseudoVersion(r.Mod.Version) || r.Mod.Version == "v0.0.0":
			notes = append(notes, fmt.Sprintf("%s requires %s %s, a placeholder that only its replace directive resolves; users cannot install it", m.path, r.Mod.Path, r.Mod.Version))
		case notReleased[dir] != "":
			notes = append(notes, fmt.Sprintf("%s requires %s, which is never released (%s)", m.path, r.Mod.Path, notReleased[dir]))
		case r.Mod.Version != version:
			notes = append(notes, fmt.Sprintf("%s requires %s %s, not the candidate %s: it must already be published", m.path, r.Mod.Path, r.Mod.Version, version))
		}
	}
	return notes
}

// publish writes m at version into the file proxy at dir.
func publish(ctx context.Context, root, dir string, m mod, version string) error {
	escPath, err := module.EscapePath(m.path)
	if err != nil {
		return err
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return err
	}
	vdir := filepath.Join(dir, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{version, time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	files, err := moduleFiles(ctx, root, m.dir)
	if err != nil {
		return err
	}
	var zbuf bytes.Buffer
	if err := modzip.Create(&zbuf, module.Version{Path: m.path, Version: version}, files); err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"list":               []byte(version + "\n"),
		escVersion + ".info": info,
		escVersion + ".mod":  m.gomod,
		escVersion + ".zip":  zbuf.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(vdir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// moduleFiles lists the files of the module in dir as a commit would hold
// them: tracked files and new ones that .gitignore does not exclude. Files of
// nested modules are in the list; modzip.Create leaves them out.
func moduleFiles(ctx context.Context, root, dir string) ([]modzip.File, error) {
	out, err := output(ctx, root, nil, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", dir)
	if err != nil {
		return nil, err
	}
	var files []modzip.File
	seen := map[string]bool{}
	for rel := range strings.SplitSeq(out, "\x00") {
		if rel == "" || seen[rel] {
			continue
		}
		seen[rel] = true
		abs := filepath.Join(root, filepath.FromSlash(rel))
		if _, err := os.Lstat(abs); errors.Is(err, fs.ErrNotExist) {
			continue // deleted, not yet committed
		}
		inMod := rel
		if dir != "." {
			inMod = strings.TrimPrefix(rel, dir+"/")
		}
		files = append(files, file{path: inMod, abs: abs})
	}
	return files, nil
}

// file is a modzip.File on disk.
type file struct{ path, abs string }

func (f file) Path() string                 { return f.path }
func (f file) Lstat() (os.FileInfo, error)  { return os.Lstat(f.abs) }
func (f file) Open() (io.ReadCloser, error) { return os.Open(f.abs) }

// checkEnv returns the environment of the go commands run from the fresh
// modules.
func checkEnv(ctx context.Context, cache, proxy string) ([]string, error) {
	usual, err := output(ctx, "", nil, "go", "env", "GOPROXY")
	if err != nil {
		return nil, err
	}
	proxies := []string{fileURL(proxy), fileURL(filepath.Join(cache, "cache", "download"))}
	for p := range strings.SplitSeq(strings.TrimSpace(usual), ",") {
		for q := range strings.SplitSeq(p, "|") {
			if q = strings.TrimSpace(q); q != "" && q != "direct" && q != "off" {
				proxies = append(proxies, q)
			}
		}
	}
	drop := map[string]bool{"GOWORK": true, "GOPROXY": true, "GOFLAGS": true, "GONOSUMDB": true, "GOPRIVATE": true,
		"GONOPROXY": true, "GOINSECURE": true, "GOMODCACHE": true, "GOTOOLCHAIN": true, "GONOSUMCHECK": true,
		"GODEBUG": true}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !drop[k] {
			env = append(env, kv)
		}
	}
	return append(env,
		"GOWORK=off",
		"GOPROXY="+strings.Join(proxies, ","),
		"GOFLAGS=-mod=mod -modcacherw",
		"GONOSUMDB=github.com/bulwark-go",
		"GOMODCACHE="+cache,
		"GOTOOLCHAIN=local",
		// The go command indexes a module's directory in the build cache by
		// path and version, taking the module cache as immutable; a candidate
		// republished under the same version would be built from the file list
		// of the previous one. Turn the index off.
		"GODEBUG=goindex=0",
	), nil
}

// claimCache takes the lock file of the module cache at dir and removes
// github.com/bulwark-go from it; the function it returns removes it again
// and releases the lock.
func claimCache(dir string) (func(), error) {
	if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "cache", "bulwark-release-check.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	clean := func() error {
		var errs []error
		for _, d := range []string{filepath.Join(dir, "github.com", "bulwark-go"), filepath.Join(dir, "cache", "download", "github.com", "bulwark-go")} {
			errs = append(errs, removeAll(d))
		}
		return errors.Join(errs...)
	}
	if err := clean(); err != nil {
		lock.Close()
		return nil, err
	}
	return func() {
		if err := clean(); err != nil {
			fmt.Fprintln(os.Stderr, "release-check:", err)
		}
		lock.Close() // releases the lock
	}, nil
}

// removeAll removes dir, whose files the module cache made read-only.
func removeAll(dir string) error {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func fileURL(path string) string { return "file://" + filepath.ToSlash(path) }

// repoSums returns the lines of every go.sum and go.work.sum of the
// repository, sorted and without repeats.
func repoSums(root string) ([]byte, error) {
	lines := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.Name() != "go.sum" && d.Name() != "go.work.sum" {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for l := range strings.SplitSeq(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines[l] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []byte(strings.Join(slices.Sorted(maps.Keys(lines)), "\n") + "\n"), nil
}

// check installs m at version in a fresh module, builds its packages, and
// builds and runs its smoke program. It returns the output of the step that
// failed.
func check(ctx context.Context, root, tmp string, env []string, sums []byte, goVersion string, m mod, version string, verbose bool) (string, error) {
	dir := filepath.Join(tmp, "check", strings.ReplaceAll(smokeName(m), "/", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	gomod := fmt.Sprintf("module example.com/releasecheck/%s\n\ngo %s\n", strings.ReplaceAll(smokeName(m), "/", "-"), goVersion)
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sums, 0o644); err != nil {
		return "", err
	}
	src := filepath.Join(root, smokeDir, smokeName(m))
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			return "", err
		}
	}
	bin := filepath.Join(dir, "smoke")
	for _, args := range [][]string{
		{"go", "get", m.path + "@" + version},
		{"go", "build", m.path + "/..."},
		{"go", "build", "-o", bin, "."},
		{bin},
	} {
		out, err := output(ctx, dir, env, args[0], args[1:]...)
		if verbose || err != nil {
			out = "$ " + strings.Join(args, " ") + "\n" + out
		}
		if verbose {
			fmt.Print(indent(out))
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", strings.Join(args[:min(len(args), 2)], " "), err)
		}
	}
	return "", nil
}

// output runs a command in dir and returns its combined output.
func output(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil && env == nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), err
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
