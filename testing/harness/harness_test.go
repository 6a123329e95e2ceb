package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNothingOutlivesAPanickingTest runs a test binary that starts Vault,
// makes Vault start the engine, and panics without calling Stop; then no
// process of the server's group (Vault or the plugin) may be left.
func TestNothingOutlivesAPanickingTest(t *testing.T) {
	if os.Getenv("HARNESS_PANIC_HELPER") == "1" {
		panickingTest()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNothingOutlivesAPanickingTest$", "-test.count=1")
	cmd.Env = append(os.Environ(), "HARNESS_PANIC_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("the helper did not panic:\n%s", out)
	}
	pgid := 0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "server-pgid="); ok {
			pgid, _ = strconv.Atoi(v)
		}
	}
	if pgid == 0 {
		t.Fatalf("the helper never started the server:\n%s", out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := processesInGroup(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the server's group outlived the test binary: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// panickingTest is the helper's body: a server with the engine running,
// then a panic.
func panickingTest() {
	ctx := context.Background()
	v, err := Start(ctx, Options{})
	if err != nil {
		fmt.Println("start:", err)
		os.Exit(3)
	}
	if err := v.CreateOrg(ctx, "panic"); err != nil {
		fmt.Println("org:", err)
		os.Exit(3)
	}
	if _, err := v.Client().Logical().ReadWithContext(ctx, "orgs/panic/config"); err != nil {
		fmt.Println("read:", err)
		os.Exit(3)
	}
	fmt.Printf("server-pgid=%d\n", v.cmd.Process.Pid)
	panic("a test failed hard, without cleaning up")
}

// processesInGroup lists the live processes whose process group is pgid.
func processesInGroup(pgid int) []string {
	var left []string
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state ppid pgrp ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			left = append(left, strings.TrimSuffix(strings.TrimPrefix(filepath.Dir(p), "/proc/"), "/stat"))
		}
	}
	return left
}

// TestPluginExitsWhenVaultIsKilled: SIGKILL Vault alone (not its process
// group, as an OOM kill does) and the engine's process, which holds
// decrypted secrets, exits within seconds instead of living on orphaned.
func TestPluginExitsWhenVaultIsKilled(t *testing.T) {
	v := StartT(t)
	if err := v.CreateOrg(context.Background(), "orphan"); err != nil {
		t.Fatal(err)
	}
	// A request makes Vault start the engine.
	if _, err := v.Client().Logical().Read("orgs/orphan/config"); err != nil {
		t.Fatal(err)
	}
	plugins := childrenOf(v.Pid(), PluginBinaryName)
	if len(plugins) == 0 {
		t.Fatal("no plugin process under Vault")
	}
	if err := v.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range plugins {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin %d still runs 10 s after Vault was killed", pid)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// alive says whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(s[i+1:]), "Z")
}
