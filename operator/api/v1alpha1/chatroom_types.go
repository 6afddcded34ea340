package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Finalizer is on every ChatRoom the controller has seen, so that deleting
// one removes its registry entry (and, under deletionPolicy Delete, its
// topic) before the object goes.
const Finalizer = "chat.palaver.dev/topic"

// Condition types of a ChatRoom.
const (
	// ConditionReady is True when the topic exists, belongs to this room
	// and has the spec's partitions and replication factor, and the room is
	// in the registry. Under driftPolicy Report, configuration changed
	// outside the ChatRoom shows in ConfigDrift and leaves Ready True.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the controller changes the topic
	// (creating it, adding partitions, moving replicas).
	ConditionProgressing = "Progressing"
	// ConditionConfigDrift is True when the topic in Kafka differs from the
	// spec in a way the controller does not (driftPolicy Report) or cannot
	// (more partitions than the spec) change back.
	ConditionConfigDrift = "ConfigDrift"
)

// Condition reasons of a ChatRoom.
const (
	// ReasonProvisioned: the topic matches the spec (Ready True,
	// Progressing False).
	ReasonProvisioned = "Provisioned"
	// ReasonCreating: the topic is being created.
	ReasonCreating = "Creating"
	// ReasonPartitionsIncreasing: partitions are being added.
	ReasonPartitionsIncreasing = "PartitionsIncreasing"
	// ReasonReplicationChanging: replicas are being reassigned to reach the
	// spec's replication factor; status.reassignment has the progress.
	ReasonReplicationChanging = "ReplicationChanging"
	// ReasonInvalidConfig: the spec cannot be applied as it is (for example a
	// replication factor above the number of brokers); the message says why.
	ReasonInvalidConfig = "InvalidConfig"
	// ReasonKafkaUnreachable: the controller cannot reach Kafka; it retries
	// with backoff.
	ReasonKafkaUnreachable = "KafkaUnreachable"
	// ReasonKafkaError: Kafka refused a request for this topic (for example
	// TOPIC_AUTHORIZATION_FAILED or a policy violation).
	ReasonKafkaError = "KafkaError"
	// ReasonTopicConflict: the topic exists but was not made for this room
	// (set spec.adoptExisting to take it over), or an older ChatRoom uses
	// the same topic.
	ReasonTopicConflict = "TopicConflict"
	// ReasonNameConflict: an older ChatRoom in another namespace has the same
	// name, and room names are global: users join rooms by name.
	ReasonNameConflict = "NameConflict"
	// ReasonTopicRecreatedExternally: the topic was deleted and recreated
	// outside the operator (its topic id changed); set spec.adoptExisting to
	// take over the new one.
	ReasonTopicRecreatedExternally = "TopicRecreatedExternally"
	// ReasonTopicDeletedExternally: the topic was deleted outside the
	// operator and driftPolicy Report keeps the controller from recreating
	// it.
	ReasonTopicDeletedExternally = "TopicDeletedExternally"
	// ReasonPaused: spec.paused is set; the controller reports but changes
	// nothing in Kafka.
	ReasonPaused = "Paused"
	// ReasonDeletionBlocked: the ChatRoom is being deleted but Kafka cannot
	// be reached to clean up; the finalizer is released after the
	// controller's --deletion-timeout.
	ReasonDeletionBlocked = "DeletionBlocked"
	// ReasonInSync: the topic's configuration matches the spec (ConfigDrift
	// False).
	ReasonInSync = "InSync"
	// ReasonDriftDetected: the topic's configuration differs from the spec
	// (ConfigDrift True); the message lists the differences.
	ReasonDriftDetected = "DriftDetected"
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
// Every field is optional.
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
	// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="topicName cannot be . or .., which Kafka refuses"
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
	// unset, the controller's --default-replication-factor applies (3 on a
	// real cluster). Changing it reassigns replicas; status.reassignment
	// shows the progress.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32767
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`

	// minInSyncReplicas is the topic's min.insync.replicas. It must not
	// exceed replicationFactor. When unset, it is 2 for a replication factor
	// of 3 or more, else 1.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32767
	MinInSyncReplicas int32 `json:"minInSyncReplicas,omitempty"`

	// retention bounds how long and how much history the topic keeps.
	// +optional
	// +kubebuilder:default={}
	Retention Retention `json:"retention,omitzero"`

	// maxMessageBytes is the topic's max.message.bytes. When unset, the
	// broker default applies (and an override made earlier is removed).
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

	// paused stops the controller from changing anything in Kafka (the
	// topic and the registry entry); status still reports what it finds.
	// Deleting a paused ChatRoom never deletes its topic.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// Retention is the topic's retention.
type Retention struct {
	// time is the topic's retention.ms: a Go duration such as "168h" (7
	// days, the default) or "1h30m", at least 1m, or "unlimited". The
	// controller also sets segment.ms to a tenth of it (between 1m and 24h),
	// so that even a quiet room's messages go once they are older than time.
	// +optional
	// +kubebuilder:default="168h"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:Pattern=`^(unlimited|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$`
	// +kubebuilder:validation:XValidation:rule="self == 'unlimited' || duration(self) >= duration('1m')",message="retention.time must be at least 1m, or unlimited"
	Time string `json:"time,omitempty"`

	// bytes is the topic's retention.bytes, per partition. When unset, size
	// does not limit retention.
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

	// topicID is the topic's Kafka UUID, spelt as Kafka's tools spell it
	// (URL-safe base64 without padding). A different ID for the same name
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

	// bytesRemaining is how much data the new replicas of the partitions
	// still moving have yet to copy, in bytes, as the brokers' log
	// directories show it.
	// +optional
	BytesRemaining int64 `json:"bytesRemaining,omitempty"`

	// throttle is the replication throttle of the moving replicas, in bytes
	// per second per broker (the controller's --reassignment-throttle);
	// unset when they are not throttled.
	// +optional
	Throttle int64 `json:"throttle,omitempty"`

	// startedAt is when the reassignment started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// ChatRoom is a chat room and the Kafka topic that carries its messages.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName={room,rooms},categories=palaver
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63",message="a ChatRoom's name is its room name: at most 63 characters"
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
