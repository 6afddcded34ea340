// Package v1alpha1 contains the chat.palaver.dev/v1alpha1 API: the ChatRoom
// resource, which declares a chat room and the Kafka topic that carries it.
//
// +kubebuilder:object:generate=true
// +groupName=chat.palaver.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "chat.palaver.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
