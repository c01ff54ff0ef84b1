// Command apicount prints the number of exported names of each package
// directory given, as its godoc shows them: the top-level names (constants,
// variables, functions, types, and the constructors and constants godoc
// lists under a type), and the members (methods, exported struct fields and
// embedded fields, interface methods of exported types). Test files and
// package main are skipped.
//
//	go run ./tools/apicount . ./healthcheck ./outlier
//
// (from the root, with the committed go.work).
package main

import (
	"fmt"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	for _, dir := range os.Args[1:] {
		fset := token.NewFileSet()
		entries, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var files []*ast.File
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			files = append(files, f)
		}
		if len(files) == 0 || files[0].Name.Name == "main" {
			continue
		}
		{
			d, err := doc.NewFromFiles(fset, files, dir)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			top, members := 0, 0
			countValues := func(vs []*doc.Value) {
				for _, v := range vs {
					for _, s := range v.Decl.Specs {
						for _, n := range s.(*ast.ValueSpec).Names {
							if n.IsExported() {
								top++
							}
						}
					}
				}
			}
			countValues(d.Consts)
			countValues(d.Vars)
			top += len(d.Funcs)
			for _, t := range d.Types {
				top++
				countValues(t.Consts)
				countValues(t.Vars)
				top += len(t.Funcs)
				members += len(t.Methods)
				for _, s := range t.Decl.Specs {
					ts := s.(*ast.TypeSpec)
					switch x := ts.Type.(type) {
					case *ast.StructType:
						for _, f := range x.Fields.List {
							for _, n := range f.Names {
								if n.IsExported() {
									members++
								}
							}
							if len(f.Names) == 0 { // embedded
								members++
							}
						}
					case *ast.InterfaceType:
						for _, f := range x.Methods.List {
							for _, n := range f.Names {
								if n.IsExported() {
									members++
								}
							}
						}
					}
				}
			}
			name := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(dir)), "../")
			if name == ".." {
				name = "."
			}
			fmt.Printf("%-16s top-level %3d  members %3d  total %3d\n", name, top, members, top+members)
		}
	}
}
