module example.com/dkron-processor-wordcount

go 1.22
