// Package v1alpha1 contains the chat.palaver.dev/v1alpha1 API: the ChatRoom
// resource, which declares a chat room and the Kafka topic that carries it.
// It depends only on k8s.io/apimachinery, so that other modules can import it.
//
// +kubebuilder:object:generate=true
// +groupName=chat.palaver.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "chat.palaver.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ChatRoom{}, &ChatRoomList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
