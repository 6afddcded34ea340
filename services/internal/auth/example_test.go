package auth_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"palaver.dev/services/internal/auth"
)

// In dev mode the gateway serves the issuer's login handler and checks
// tokens with its verifier.
func ExampleDevIssuer() {
	dev, err := auth.NewDevIssuer(12 * time.Hour)
	if err != nil {
		panic(err)
	}

	req := httptest.NewRequest("POST", "/v1/dev/login", strings.NewReader(`{"name":"Ada Lovelace"}`))
	rec := httptest.NewRecorder()
	dev.LoginHandler().ServeHTTP(rec, req)
	fmt.Println(rec.Code)

	token, _, err := dev.Issue("Ada Lovelace")
	if err != nil {
		panic(err)
	}
	id, err := dev.Verifier().Verify(context.Background(), token)
	if err != nil {
		panic(err)
	}
	fmt.Println(id.UserID, id.Name, id.MayJoin("lobby"))

	_, err = dev.Verifier().Verify(context.Background(), token+"x")
	fmt.Println(err)
	// Output:
	// 200
	// dev:ada-lovelace Ada Lovelace true
	// auth: invalid token: bad signature
}

func ExampleBearerToken() {
	req := httptest.NewRequest("GET", "/v1/rooms", nil)
	req.Header.Set("Authorization", "bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")
	fmt.Println(auth.BearerToken(req))
	// Output: eyJhbGciOiJIUzI1NiJ9.e30.sig
}
