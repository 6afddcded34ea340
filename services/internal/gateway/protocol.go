package gateway

import (
	"encoding/json"

	"palaver.dev/services/internal/gateway/roomhub"
	"palaver.dev/services/internal/protocol"
)

// supportedVersions are listed in unsupported_version errors.
var supportedVersions = []int{protocol.Version}

// protoError is a command's failure: the code and message of its answer.
type protoError struct {
	code, msg string
}

func (e *protoError) Error() string { return e.code + ": " + e.msg }

func fail(code, msg string) *protoError { return &protoError{code: code, msg: msg} }

func messageFrame(d *roomhub.Delivery) protocol.MessageFrame {
	m := d.Msg
	name := m.SenderName
	if name == "" {
		name = m.SenderID
	}
	return protocol.MessageFrame{
		Op: protocol.OpMessage, Room: d.Room, ID: m.ID, Sender: protocol.User{ID: m.SenderID, Name: name}, Text: m.Text,
		Time: protocol.Time{Time: m.Time}, Partition: m.Partition, Offset: m.Offset, Cursor: d.Cursor.String(),
		ClientTime: protocol.Time{Time: m.ClientTime},
	}
}

// encodeDelivery is the hub's frame encoder.
func encodeDelivery(d *roomhub.Delivery) []byte {
	return mustJSON(messageFrame(d))
}

// mustJSON encodes frames, which are plain structs of strings and numbers.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("gateway: encode frame: " + err.Error())
	}
	return b
}
