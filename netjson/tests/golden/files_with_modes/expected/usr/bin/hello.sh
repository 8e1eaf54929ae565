#!/bin/sh
echo hello