package message_test

import (
	"errors"
	"fmt"

	"palaver.dev/services/internal/message"
)

func ExampleDecode() {
	_, err := message.Decode([]byte(`{"v":1,"id":"c-1","room":"lobby","sender_id":"u-42","text":""}`))
	fmt.Println(errors.Is(err, message.ErrMissingField), err)
	// Output: true message: missing required field: text
}
