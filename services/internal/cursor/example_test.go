package cursor_test

import (
	"fmt"

	"palaver.dev/services/internal/cursor"
)

func ExampleParse() {
	var c cursor.Cursor
	c.Advance(0, 41) // delivered the message at offset 41 of partition 0
	token := c.String()

	resumed, _ := cursor.Parse(token)
	next, _ := resumed.Next(0)
	fmt.Println(token, next)
	// Output: AQEAKg 42
}
