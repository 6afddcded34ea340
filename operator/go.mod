module palaver.dev/operator

go 1.26
