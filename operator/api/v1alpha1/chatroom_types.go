package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a ChatRoom.
const (
	// ConditionReady is True when the topic exists and matches the spec.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the controller changes the topic
	// (creating it, adding partitions, moving replicas).
	ConditionProgressing = "Progressing"
	// ConditionConfigDrift is True when the topic's configuration in Kafka
	// differs from the spec (and driftPolicy is Report, or enforcing failed).
	ConditionConfigDrift = "ConfigDrift"
)

// Condition reasons of a ChatRoom.
const (
	ReasonProvisioned              = "Provisioned"
	ReasonCreating                 = "Creating"
	ReasonPartitionsIncreasing     = "PartitionsIncreasing"
	ReasonReplicationChanging      = "ReplicationChanging"
	ReasonInvalidConfig            = "InvalidConfig"
	ReasonKafkaUnreachable         = "KafkaUnreachable"
	ReasonTopicConflict            = "TopicConflict"
	ReasonTopicRecreatedExternally = "TopicRecreatedExternally"
	ReasonPaused                   = "Paused"
	ReasonDeletionBlocked          = "DeletionBlocked"
)

// DeletionPolicy says what happens to the Kafka topic when its ChatRoom is
// deleted.
// +kubebuilder:validation:Enum=Retain;Delete
type DeletionPolicy string

const (
	// DeletionPolicyRetain keeps the topic and its messages.
	DeletionPolicyRetain DeletionPolicy = "Retain"
	// DeletionPolicyDelete deletes the topic and its messages.
	DeletionPolicyDelete DeletionPolicy = "Delete"
)

// DriftPolicy says what the controller does when the topic in Kafka no
// longer matches the spec.
// +kubebuilder:validation:Enum=Enforce;Report
type DriftPolicy string

const (
	// DriftPolicyEnforce changes the topic back to the spec.
	DriftPolicyEnforce DriftPolicy = "Enforce"
	// DriftPolicyReport only sets the ConfigDrift condition.
	DriftPolicyReport DriftPolicy = "Report"
)

// ChatRoomSpec is the desired state of a chat room and its Kafka topic.
// +kubebuilder:validation:XValidation:rule="has(self.topicName) == has(oldSelf.topicName)",message="topicName can only be set when the ChatRoom is created"
// +kubebuilder:validation:XValidation:rule="!has(self.minInSyncReplicas) || !has(self.replicationFactor) || self.minInSyncReplicas <= self.replicationFactor",message="minInSyncReplicas must not exceed replicationFactor"
type ChatRoomSpec struct {
	// topicName is the Kafka topic that carries the room. It cannot change
	// after creation. When unset, the controller derives a name from the
	// ChatRoom's namespace and name and reports it in status.topicName.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=249
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9._-]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="topicName is immutable"
	TopicName string `json:"topicName,omitempty"`

	// partitions is the topic's partition count. Kafka cannot remove
	// partitions, so it may only grow.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self >= oldSelf",message="partitions can only grow"
	Partitions int32 `json:"partitions,omitempty"`

	// replicationFactor is the number of replicas of each partition. When
	// unset, the controller's --default-replication-factor applies.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`

	// minInSyncReplicas is the topic's min.insync.replicas. It must not
	// exceed replicationFactor. When unset, the broker default applies.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MinInSyncReplicas int32 `json:"minInSyncReplicas,omitempty"`

	// retention bounds how long and how much history the topic keeps.
	// +optional
	Retention *Retention `json:"retention,omitempty"`

	// maxMessageBytes is the topic's max.message.bytes. When unset, the
	// broker default applies.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxMessageBytes int32 `json:"maxMessageBytes,omitempty"`

	// displayName is the room's name as shown to users.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	DisplayName string `json:"displayName,omitempty"`

	// description says what the room is for.
	// +optional
	// +kubebuilder:validation:MaxLength=1000
	Description string `json:"description,omitempty"`

	// deletionPolicy says whether deleting the ChatRoom deletes the topic.
	// +optional
	// +kubebuilder:default=Retain
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// driftPolicy says whether the controller reverts changes made to the
	// topic outside the ChatRoom, or only reports them.
	// +optional
	// +kubebuilder:default=Enforce
	DriftPolicy DriftPolicy `json:"driftPolicy,omitempty"`

	// adoptExisting lets the ChatRoom take over a topic that already exists
	// in Kafka. Without it, an existing topic is a TopicConflict.
	// +optional
	AdoptExisting bool `json:"adoptExisting,omitempty"`

	// paused stops the controller from changing the topic; status still
	// reports what it finds.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// Retention is the topic's retention. An unset field leaves the broker
// default in place.
type Retention struct {
	// time is the topic's retention.ms, as a Go duration such as "168h".
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	Time *metav1.Duration `json:"time,omitempty"`

	// bytes is the topic's retention.bytes, per partition.
	// +optional
	// +kubebuilder:validation:Minimum=1
	Bytes int64 `json:"bytes,omitempty"`
}

// ChatRoomStatus is what the controller last saw of the topic.
type ChatRoomStatus struct {
	// observedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions are Ready, Progressing and ConfigDrift.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// topicName is the Kafka topic the room uses.
	// +optional
	TopicName string `json:"topicName,omitempty"`

	// topicID is the topic's Kafka UUID. A different ID for the same name
	// means the topic was deleted and recreated outside the operator.
	// +optional
	TopicID string `json:"topicID,omitempty"`

	// partitions is the topic's partition count in Kafka.
	// +optional
	Partitions int32 `json:"partitions,omitempty"`

	// replicationFactor is the topic's replication factor in Kafka.
	// +optional
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`

	// reassignment reports a replica reassignment in progress, and is unset
	// when none is.
	// +optional
	Reassignment *Reassignment `json:"reassignment,omitempty"`
}

// Reassignment is the progress of a change of replication factor.
type Reassignment struct {
	// targetReplicationFactor is the replication factor being moved to.
	TargetReplicationFactor int32 `json:"targetReplicationFactor"`

	// partitionsTotal is the number of partitions being reassigned.
	PartitionsTotal int32 `json:"partitionsTotal"`

	// partitionsDone is the number of partitions whose reassignment finished.
	PartitionsDone int32 `json:"partitionsDone"`

	// startedAt is when the reassignment started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// ChatRoom is a chat room and the Kafka topic that carries its messages.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=room,categories=palaver
// +kubebuilder:printcolumn:name="Topic",type=string,JSONPath=`.status.topicName`
// +kubebuilder:printcolumn:name="Partitions",type=integer,JSONPath=`.status.partitions`
// +kubebuilder:printcolumn:name="RF",type=integer,JSONPath=`.status.replicationFactor`
// +kubebuilder:printcolumn:name="Retention",type=string,JSONPath=`.spec.retention.time`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ChatRoom struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired room and topic. Every field is optional.
	// +optional
	// +kubebuilder:default={}
	Spec ChatRoomSpec `json:"spec"`

	// status is what the controller last saw.
	// +optional
	Status ChatRoomStatus `json:"status,omitzero"`
}

// ChatRoomList is a list of ChatRooms.
//
// +kubebuilder:object:root=true
type ChatRoomList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChatRoom `json:"items"`
}
