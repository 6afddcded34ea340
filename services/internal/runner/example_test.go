package runner_test

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"palaver.dev/services/internal/runner"
)

// A service is its parts: here an HTTP server and a worker. Run returns when
// the context ends (in main: runner.SignalContext) and every part drained.
func ExampleRun() {
	srv, err := runner.Listen("127.0.0.1:0", &http.Server{Handler: http.NotFoundHandler()}, 5*time.Second)
	if err != nil {
		panic(err)
	}
	worker := runner.Func(func(ctx context.Context) error {
		<-ctx.Done() // real work would loop here until cancelled
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	err = runner.Run(ctx, nil, time.Second,
		runner.Named{Name: "http", Part: srv},
		runner.Named{Name: "worker", Part: worker})
	fmt.Println("stopped cleanly:", err == nil)
	// Output: stopped cleanly: true
}
