package presence

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// StateVersion is the version of the state records this package writes.
const StateVersion = 1

// checkpointPrefix starts the keys of checkpoint records, which are not
// room names (rooms never contain '~').
const checkpointPrefix = "~checkpoint/"

// State is the JSON value of a room's record on the state topic (key: the
// room name): everything known of the room at one point of its events
// partition. Readers that only show presence need Count, Users' ids and
// names, and Typing; Conns and Offset let a replica that takes the
// partition over resume exactly.
type State struct {
	V      int       `json:"v"`
	Room   string    `json:"room"`
	Offset int64     `json:"offset"` // the last event of the partition this state includes
	Time   time.Time `json:"time"`   // when it was published
	Count  int       `json:"count"`  // users online
	Conns  int       `json:"conns"`  // their connections
	Users  []Member  `json:"users"`  // sorted by id
	Typing []string  `json:"typing,omitempty"`
}

// Member is an online user of a room.
type Member struct {
	ID    string   `json:"id"`
	Name  string   `json:"name"`
	Conns []string `json:"conns"` // "gateway/conn", sorted
}

// Checkpoint is the value of a partition's checkpoint record on the state
// topic (key "~checkpoint/<partition>"): every event up to Offset is in
// the room records published before it, and Gateways is when each gateway
// was last heard from.
type Checkpoint struct {
	V         int                  `json:"v"`
	Partition int                  `json:"partition"`
	Offset    int64                `json:"offset"`
	Gateways  map[string]time.Time `json:"gateways"`
}

// CheckpointKey is the state topic key of a partition's checkpoint.
func CheckpointKey(partition int) string { return fmt.Sprintf("%s%d", checkpointPrefix, partition) }

// IsCheckpointKey tells checkpoint records from room records.
func IsCheckpointKey(key []byte) bool { return strings.HasPrefix(string(key), checkpointPrefix) }

// DecodeState parses a room record.
func DecodeState(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("%w: state: %w", ErrMalformed, err)
	}
	if s.V != StateVersion {
		return State{}, fmt.Errorf("%w: state version %d", ErrVersion, s.V)
	}
	return s, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("presence: encode: " + err.Error())
	}
	return b
}

// connKey joins a gateway and a connection id.
func connKey(gateway, conn string) string { return gateway + "/" + conn }

// splitConnKey returns the gateway of a connKey.
func connGateway(key string) string {
	if i := strings.LastIndexByte(key, '/'); i >= 0 {
		return key[:i]
	}
	return key
}
