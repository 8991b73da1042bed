module github.com/asyncfn/asyncfn

go 1.26.8
