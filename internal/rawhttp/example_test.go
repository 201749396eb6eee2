package rawhttp_test

import (
	"bufio"
	"fmt"
	"strings"

	"github.com/sluiceproxy/sluice/internal/rawhttp"
)

func ExampleReadBody() {
	res := "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n"
	n, err := rawhttp.ReadBody(bufio.NewReader(strings.NewReader(res)))
	fmt.Println(n, err)
	// Output: 5 <nil>
}
