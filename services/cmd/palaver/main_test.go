package main

import (
	"testing"

	"palaver.dev/services/internal/chatcli"
	"palaver.dev/services/internal/chatclient/fakegateway"
)

func TestCommandLine(t *testing.T) {
	gw := fakegateway.Start(t)
	tests := []struct {
		args []string
		exit int
	}{
		{nil, chatcli.ExitOK},
		{[]string{"help"}, chatcli.ExitOK},
		{[]string{"nope"}, chatcli.ExitUsage},
		{[]string{"rooms", "--url", gw.URL, "--name", "Ada"}, chatcli.ExitOK},
		{[]string{"rooms", "--url", gw.URL, "--name", "Ada", "extra"}, chatcli.ExitUsage},
		{[]string{"rooms", "-h"}, chatcli.ExitOK},
		{[]string{"chat", "--url", gw.URL, "--name", "Ada"}, chatcli.ExitUsage},
		{[]string{"chat", "--url", gw.URL, "--name", "Ada", "--room", "nowhere"}, chatcli.ExitNotFound},
		{[]string{"chat", "--url", gw.URL, "--name", "Ada", "--room", "secret"}, chatcli.ExitForbidden},
		{[]string{"chat", "--bogus"}, chatcli.ExitUsage},
		{[]string{"load", "--url", gw.URL, "--name", "Ada"}, chatcli.ExitUsage},
		{[]string{"load", "--url", gw.URL, "--name", "Ada", "--room", "lobby", "--members", "2", "--rate", "20", "--count", "10", "--warmup", "0"}, chatcli.ExitOK},
		{[]string{"load", "--url", gw.URL, "--name", "Ada", "--room", "nowhere", "--members", "2"}, chatcli.ExitNotFound},
		{[]string{"dev", "--bogus"}, chatcli.ExitUsage},
		{[]string{"dev", "extra"}, chatcli.ExitUsage},
		{[]string{"chat", "--url", gw.URL, "--name", "Ada", "--room", "Lobby"}, chatcli.ExitUsage},
		{[]string{"chat", "--url", "ftp://x", "--name", "Ada", "--room", "lobby"}, chatcli.ExitUsage},
		{[]string{"load", "--url", gw.URL, "--name", "Ada", "--room", "lobby", "--members", "0"}, chatcli.ExitUsage},
		{[]string{"load", "--url", gw.URL, "--name", "Ada", "--room", "lobby", "--members", "2", "--rate", "1000", "--count", "10", "--warmup", "0"}, chatcli.ExitUsage}, // over the send limit
		{[]string{"simulate", "--url", gw.URL, "--name", "Ada", "--rooms", "lobby,random", "--people", "3", "--rate", "5", "--duration", "1s"}, chatcli.ExitOK},
		{[]string{"simulate", "--url", gw.URL, "--name", "Ada", "--scratch-rooms", "0"}, chatcli.ExitUsage},
		{[]string{"simulate", "extra"}, chatcli.ExitUsage},
		{[]string{"bench", "--url", gw.URL, "--name", "Ada", "--scenarios", "A,E"}, chatcli.ExitUsage},
		{[]string{"bench", "--bogus"}, chatcli.ExitUsage},
	}
	for _, tt := range tests {
		if got := chatcli.ExitCode(run(t.Context(), tt.args)); got != tt.exit {
			t.Errorf("palaver %q exits %d, want %d", tt.args, got, tt.exit)
		}
	}
}
