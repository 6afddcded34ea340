module palaver.dev/services

go 1.26
